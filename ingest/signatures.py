"""Who may send: signature and write-key checks for every source kind (contract section 3).

Each check returns ``None`` when the request is authentic, else a short reason for the 401 body.
None of them raises, whatever the headers hold, and every comparison runs in constant time.
``secrets`` is a list so a secret can be rotated without downtime: during the overlap the old and
the new secret are both valid. Empty secrets are ignored (an empty HMAC key would let anyone sign)::

    reason = verify_hubspot_v3("POST", "https://hooks.example.com/webhooks/hubspot", body,
                               headers.get("X-HubSpot-Signature-v3"),
                               headers.get("X-HubSpot-Request-Timestamp"),
                               secrets=["new-secret", "old-secret"], now=time.time())
    if reason is not None:
        raise Unauthorized(reason)

``now`` is always Unix seconds (float), passed in by the caller: no clock is read here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from functools import lru_cache

from services import signing

HUBSPOT_SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
HUBSPOT_TOLERANCE_MS = 5 * 60 * 1000
MAUTIC_SIGNATURE_HEADER = "Webhook-Signature"
GENERIC_SIGNATURE_HEADER = signing.SIGNATURE_HEADER

# HubSpot signs the URI with these escapes decoded (its "validating requests" guide lists them).
_HUBSPOT_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.IGNORECASE)
_MAX_HEADER = 4096  # longer auth headers are refused before any work


def _usable(secrets: Iterable[str]) -> list[str]:
    return [s for s in secrets if isinstance(s, str) and s]


def _any_equal(expected: Iterable[bytes], candidate: bytes) -> bool:
    """Constant-time membership: every comparison runs, none exits early."""
    ok = False
    for value in expected:
        ok |= hmac.compare_digest(value, candidate)
    return ok


def _hmac_b64(secret: str, message: bytes) -> bytes:
    return base64.b64encode(hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest())


def verify_generic(body: bytes, header: str | None, secrets: Iterable[str], now: float) -> str | None:
    """The ``generic`` scheme: ``X-Handoff-Signature: t=<unix s>,v1=<hex hmac of "<t>.<body>">``,
    300 s tolerance (delegates to :func:`services.signing.verify`)."""
    keys = _usable(secrets)
    if not keys:
        return "this source has no signing secret configured"
    if header is not None and (not isinstance(header, str) or len(header) > _MAX_HEADER):
        return f"malformed {GENERIC_SIGNATURE_HEADER} header"
    return signing.verify(body, header, keys, now)


def hubspot_signed_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the full ``https://host/path?query`` with the documented
    escapes (``%3A`` ``%2F`` ``%3F`` ``%40`` ``%21`` ``%24`` ``%27`` ``%28`` ``%29`` ``%2A`` ``%2C``
    ``%3B``) decoded and every other escape left as is."""
    return _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_DECODED[m.group(0).upper()], uri)


def hubspot_v3_signature(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, method + uri + body + timestamp)); for tests and simulators."""
    message = method.upper().encode() + hubspot_signed_uri(uri).encode("utf-8") + body + timestamp.encode()
    return _hmac_b64(secret, message).decode("ascii")


def verify_hubspot_v3(
    method: str,
    uri: str,
    body: bytes,
    signature_header: str | None,
    timestamp_header: str | None,
    secrets: Iterable[str],
    now: float,
) -> str | None:
    """HubSpot request signature v3 (the app's client secret is the key).

    ``uri`` must be the public URL HubSpot called, exactly as configured in HubSpot (scheme, host,
    path, query), not one rebuilt from a proxied ``Host`` header. ``body`` is the raw body. The
    timestamp header is Unix milliseconds; more than 5 minutes away from ``now`` is refused.
    """
    keys = _usable(secrets)
    if not keys:
        return "this source has no HubSpot client secret configured"
    if not signature_header or not isinstance(signature_header, str) or len(signature_header) > _MAX_HEADER:
        return f"missing or malformed {HUBSPOT_SIGNATURE_HEADER} header"
    stamp = timestamp_header.strip() if isinstance(timestamp_header, str) else ""
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 16:
        return f"missing or malformed {HUBSPOT_TIMESTAMP_HEADER} header; expected Unix milliseconds"
    if abs(now * 1000 - int(stamp)) > HUBSPOT_TOLERANCE_MS:
        return "HubSpot request timestamp is more than 5 minutes from now; the request is stale"
    if not isinstance(method, str) or not isinstance(uri, str):
        return "cannot rebuild the signed request"
    signed_uri = hubspot_signed_uri(uri).encode("utf-8", "replace")
    message = method.upper().encode() + signed_uri + body + stamp.encode()
    candidate = signature_header.strip().encode("utf-8", "replace")
    if _any_equal((_hmac_b64(k, message) for k in keys), candidate):
        return None
    return "HubSpot signature does not match"


def verify_mautic(body: bytes, header: str | None, secrets: Iterable[str]) -> str | None:
    """Mautic: ``Webhook-Signature`` = base64(HMAC-SHA256(secret, raw body)). Mautic signs no
    timestamp, so a captured request can be replayed; its event ids make a replay a duplicate."""
    keys = _usable(secrets)
    if not keys:
        return "this source has no Mautic webhook secret configured"
    if not header or not isinstance(header, str) or len(header) > _MAX_HEADER:
        return f"missing or malformed {MAUTIC_SIGNATURE_HEADER} header"
    candidate = header.strip().encode("utf-8", "replace")
    if _any_equal((_hmac_b64(k, body) for k in keys), candidate):
        return None
    return "Mautic signature does not match"


def _key_matches(key: str, secrets: list[str]) -> bool:
    # Digests first: compare_digest on equal-length values leaks nothing about the key's length.
    candidate = hashlib.sha256(key.encode("utf-8", "replace")).digest()
    return _any_equal((_secret_digest(s) for s in secrets), candidate)


@lru_cache(maxsize=64)
def _secret_digest(secret: str) -> bytes:
    """The configured secrets' digests, computed once each rather than on every request."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def verify_write_key_bearer(authorization_header: str | None, secrets: Iterable[str]) -> str | None:
    """``Authorization: Bearer <write key>`` where the key is one of the source's secrets."""
    keys = _usable(secrets)
    if not keys:
        return "this source has no write key configured"
    if not authorization_header or not isinstance(authorization_header, str):
        return "missing Authorization header; send 'Authorization: Bearer <write key>'"
    if len(authorization_header) > _MAX_HEADER:
        return "malformed Authorization header"
    scheme, _, token = authorization_header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return "Authorization header must be 'Bearer <write key>'"
    return None if _key_matches(token, keys) else "write key is not valid for this source"


def verify_basic_write_key(authorization_header: str | None, secrets: Iterable[str]) -> str | None:
    """Segment's convention: HTTP Basic with the write key as user name and an empty password
    (``base64("<key>:")``). A password, if a client sends one, is ignored: the key is the secret."""
    keys = _usable(secrets)
    if not keys:
        return "this source has no write key configured"
    if not authorization_header or not isinstance(authorization_header, str):
        return "missing Authorization header; send HTTP Basic with the write key as user name"
    if len(authorization_header) > _MAX_HEADER:
        return "malformed Authorization header"
    scheme, _, encoded = authorization_header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return "Authorization header must be HTTP Basic with the write key as user name"
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return "malformed HTTP Basic credentials"
    user, _, _password = decoded.partition(":")
    if not user:
        return "HTTP Basic user name (the write key) is empty"
    return None if _key_matches(user, keys) else "write key is not valid for this source"
