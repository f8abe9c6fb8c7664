"""Outbound HTTP as plain data, and the one thin sender that puts it on the wire.

Adapters *build* requests (pure, testable, storable as text); :func:`send_sequence` *sends* them, in
order, over an ``httpx.AsyncClient`` the caller owns::

    requests = build_crm_requests(crm, lead, assignment_id, environ=os.environ, timestamp=now_s)
    result = await send_sequence(client, requests, timeout=crm.timeout_seconds)
    retry.classify(result.status, result.error)   # "delivered" | "retry" | "dead"

A later request can use a value from an earlier response (HubSpot's contact id, Salesforce's Lead
id): it carries a :class:`Bind` naming a placeholder in its URL or body, the earlier step, and the
path to the value in that step's JSON answer. The sender substitutes before sending.

Error strings in :class:`SendResult` start with ``timeout:``, ``connection:``, ``protocol:`` or
``permanent:`` (the last is a request that can never succeed, e.g. a malformed URL, so
:func:`notifier.retry.classify` dead-letters it at once).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from notifier.retry import PERMANENT_ERROR_PREFIX

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEEP_RESPONSE_BYTES = 2000  # enough to explain a failure in a dead letter, small enough for a row


class MissingSecret(ValueError):
    """The config names an environment variable for a secret or token, and it is not set."""

    def __init__(self, config_key: str, env_name: str | None) -> None:
        if env_name is None:
            message = f"{config_key} is not configured; name the environment variable that holds the secret"
        else:
            message = f"{config_key} names {env_name}, which is not set; export {env_name}=<value> and restart"
        super().__init__(message)
        self.config_key = config_key
        self.env_name = env_name


def secret_from(environ: Mapping[str, str], env_name: str | None, config_key: str) -> str:
    """The (first, for comma-separated rotation lists) secret held in ``environ[env_name]``."""
    value = environ.get(env_name, "") if env_name else ""
    first = next((part.strip() for part in value.split(",") if part.strip()), "")
    if not first:
        raise MissingSecret(config_key, env_name)
    return first


def json_bytes(value: Any) -> bytes:
    """Compact JSON as sent on the wire (datetimes become RFC 3339 strings)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)
    except TypeError:
        # orjson refuses integers beyond 64 bits and unknown types; the standard library takes both (and,
        # as orjson does, it gets null for an infinite or NaN float: it would write Infinity, not JSON).
        return json.dumps(_finite(value), default=str, separators=(",", ":"), ensure_ascii=False).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


@dataclass(frozen=True)
class Bind:
    """Replace ``placeholder`` (in URL and body) with ``path`` looked up in step ``step``'s JSON answer."""

    placeholder: str
    step: int
    path: tuple[str | int, ...]


@dataclass(frozen=True)
class OutboundRequest:
    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes = b""
    step: str = "send"  # a name for logs and dead letters: "contact", "note", "lead", "task", ...
    binds: tuple[Bind, ...] = ()

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == lowered), None)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass(frozen=True)
class StepAnswer:
    step: str
    status: int
    body: bytes  # truncated


@dataclass(frozen=True)
class SendResult:
    """How a sequence ended: the last status (``None`` if no answer), ``Retry-After`` and error text.

    ``completed`` requests succeeded (2xx) out of ``total``; the sequence stops at the first failure.
    """

    status: int | None
    retry_after: str | None
    error: str | None
    completed: int
    total: int
    answers: tuple[StepAnswer, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.completed == self.total


def _lookup(document: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        if isinstance(part, int) and isinstance(document, list) and -len(document) <= part < len(document):
            document = document[part]
        elif isinstance(part, str) and isinstance(document, dict) and part in document:
            document = document[part]
        else:
            raise LookupError(".".join(str(p) for p in path))
    return document


def resolve(request: OutboundRequest, answers: Sequence[Any]) -> OutboundRequest:
    """``request`` with every placeholder filled from the parsed JSON ``answers`` of earlier steps.

    Raises ``LookupError`` naming the missing path when an answer lacks the value.
    """
    url, body = request.url, request.body
    for bind in request.binds:
        if not 0 <= bind.step < len(answers):
            raise LookupError(f"step {bind.step} has not run")
        value = _lookup(answers[bind.step], bind.path)
        if not isinstance(value, str | int) or isinstance(value, bool) or value == "":
            raise LookupError(".".join(str(p) for p in bind.path))
        text = str(value)
        url = url.replace(bind.placeholder, quote(text, safe=""))
        # Inside a JSON string: escape the way JSON does (drop the surrounding quotes).
        body = body.replace(bind.placeholder.encode(), json_bytes(text)[1:-1])
    return OutboundRequest(request.method, url, request.headers, body, request.step)


def _describe(exc: httpx.HTTPError) -> str:
    kind = type(exc).__name__
    detail = str(exc) or kind
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout: {kind}: {detail}"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return f"{PERMANENT_ERROR_PREFIX} {kind}: {detail}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"protocol: {kind}: {detail}"
    return f"connection: {kind}: {detail}"


async def send_sequence(
    client: httpx.AsyncClient,
    requests: Sequence[OutboundRequest],
    timeout: float | None = None,
) -> SendResult:
    """Send ``requests`` in order, stopping at the first one that does not answer 2xx.

    Never raises for network trouble: it comes back as ``error``. ``timeout`` (seconds) bounds each
    request; ``None`` keeps the client's own timeout.
    """
    answers: list[StepAnswer] = []
    parsed: list[Any] = []
    status: int | None = None
    for index, planned in enumerate(requests):
        try:
            request = resolve(planned, parsed)
        except LookupError as exc:
            error = f"protocol: step {planned.step!r} needs {exc} from an earlier answer, which lacks it"
            return SendResult(None, None, error, index, len(requests), tuple(answers))
        try:
            response = await client.request(
                request.method,
                request.url,
                headers=dict(request.headers),
                content=request.body,
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else timeout,
            )
        except httpx.InvalidURL as exc:
            error = f"{PERMANENT_ERROR_PREFIX} invalid URL {request.url!r}: {exc}"
            return SendResult(None, None, error, index, len(requests), tuple(answers))
        except httpx.HTTPError as exc:
            return SendResult(None, None, _describe(exc), index, len(requests), tuple(answers))
        status = response.status_code
        answers.append(StepAnswer(request.step, status, response.content[:_KEEP_RESPONSE_BYTES]))
        if not 200 <= status < 300:
            reason = response.text[:_KEEP_RESPONSE_BYTES] or response.reason_phrase
            return SendResult(
                status, response.headers.get("retry-after"), reason or None, index, len(requests), tuple(answers)
            )
        try:
            parsed.append(orjson.loads(response.content) if response.content else None)
        except orjson.JSONDecodeError:
            parsed.append(None)
    return SendResult(status, None, None, len(requests), len(requests), tuple(answers))
