"""The ``generic`` signature scheme, Stripe style, used inbound (webhooks) and outbound (CRM pushes).

Header ``X-Handoff-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``::

    header = sign(b'{"a":1}', "s3cret", timestamp=1700000000)
    verify(b'{"a":1}', header, ["s3cret"], now=1700000100)  # None when valid, else a reason string

Several ``v1=`` entries and several secrets are allowed (secret rotation). Comparisons run in constant
time, and no header, however malformed, makes :func:`verify` raise.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

SIGNATURE_HEADER = "X-Handoff-Signature"
TOLERANCE_SECONDS = 300


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    return f"t={timestamp},v1={hmac_hex(secret, str(timestamp).encode() + b'.' + body)}"


def verify(
    body: bytes,
    header: str | None,
    secrets: Iterable[str],
    now: float,
    tolerance: int = TOLERANCE_SECONDS,
) -> str | None:
    """``None`` if ``header`` is a valid signature of ``body`` by one of ``secrets``, else why not."""
    if not header:
        return f"missing {SIGNATURE_HEADER} header"
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value.strip())
    if timestamp is None or not candidates:
        return f"malformed {SIGNATURE_HEADER} header; expected t=<unix seconds>,v1=<hex hmac>"
    if abs(now - timestamp) > tolerance:
        return f"signature timestamp is more than {tolerance} s from now; re-sign the request"
    signed = str(timestamp).encode() + b"." + body
    ok = False
    for secret in secrets:
        expected = hmac_hex(secret, signed)
        for candidate in candidates:
            # No early exit: every comparison runs, each in constant time.
            ok |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
    return None if ok else "signature does not match"
