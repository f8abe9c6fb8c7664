"""Signature and write-key checks: good, wrong, stale, tampered, rotated, and garbage headers."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.signatures import (
    hubspot_signed_uri,
    hubspot_v3_signature,
    verify_basic_write_key,
    verify_generic,
    verify_hubspot_v3,
    verify_mautic,
    verify_write_key_bearer,
)
from services.signing import sign
from tests.unit.ingest.payloads import raw

NOW = 1_795_341_600.0  # Unix seconds
BODY = raw("hubspot_subscription_events.json")
URI = "https://hooks.acme-analytics.io/webhooks/hubspot"


# --- generic -------------------------------------------------------------------------------------

def test_generic_good_signature_passes() -> None:
    assert verify_generic(BODY, sign(BODY, "s3cret", int(NOW)), ["s3cret"], NOW) is None


def test_generic_wrong_secret_is_refused() -> None:
    assert verify_generic(BODY, sign(BODY, "other", int(NOW)), ["s3cret"], NOW) == "signature does not match"


def test_generic_stale_and_future_timestamps_are_refused() -> None:
    assert verify_generic(BODY, sign(BODY, "s3cret", int(NOW) - 301), ["s3cret"], NOW) is not None
    assert verify_generic(BODY, sign(BODY, "s3cret", int(NOW) + 301), ["s3cret"], NOW) is not None
    assert verify_generic(BODY, sign(BODY, "s3cret", int(NOW) - 299), ["s3cret"], NOW) is None


def test_generic_tampered_body_is_refused() -> None:
    header = sign(BODY, "s3cret", int(NOW))
    assert verify_generic(BODY.replace(b"90051", b"90052"), header, ["s3cret"], NOW) is not None


def test_generic_rotation_accepts_old_and_new_secret() -> None:
    for secret in ("old", "new"):
        assert verify_generic(BODY, sign(BODY, secret, int(NOW)), ["new", "old"], NOW) is None
    assert verify_generic(BODY, sign(BODY, "older", int(NOW)), ["new", "old"], NOW) is not None


def test_generic_without_configured_secret_refuses_even_an_empty_key_signature() -> None:
    assert verify_generic(BODY, sign(BODY, "", int(NOW)), [], NOW) is not None
    assert verify_generic(BODY, sign(BODY, "", int(NOW)), [""], NOW) is not None


def test_generic_missing_header() -> None:
    assert verify_generic(BODY, None, ["s3cret"], NOW) is not None


# --- HubSpot v3 ----------------------------------------------------------------------------------

def _documented_v3(secret: str, method: str, uri: str, body: bytes, timestamp: str) -> str:
    """The formula as HubSpot's guide states it, written out independently of the code under test."""
    source = f"{method}{uri}{body.decode('utf-8')}{timestamp}".encode()
    return base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()


def test_hubspot_good_signature_passes() -> None:
    stamp = str(int(NOW * 1000))
    signature = _documented_v3("client-secret", "POST", URI, BODY, stamp)
    assert hubspot_v3_signature("client-secret", "POST", URI, BODY, stamp) == signature
    assert verify_hubspot_v3("POST", URI, BODY, signature, stamp, ["client-secret"], NOW) is None


def test_hubspot_wrong_secret_is_refused() -> None:
    stamp = str(int(NOW * 1000))
    signature = _documented_v3("someone-else", "POST", URI, BODY, stamp)
    assert verify_hubspot_v3("POST", URI, BODY, signature, stamp, ["client-secret"], NOW) is not None


def test_hubspot_stale_timestamp_is_refused_after_five_minutes() -> None:
    for age_ms, ok in ((299_000, True), (301_000, False), (-301_000, False)):
        stamp = str(int(NOW * 1000) - age_ms)
        signature = _documented_v3("client-secret", "POST", URI, BODY, stamp)
        result = verify_hubspot_v3("POST", URI, BODY, signature, stamp, ["client-secret"], NOW)
        assert (result is None) is ok, (age_ms, result)


def test_hubspot_tampered_body_uri_method_or_timestamp_is_refused() -> None:
    stamp = str(int(NOW * 1000))
    signature = _documented_v3("client-secret", "POST", URI, BODY, stamp)
    assert verify_hubspot_v3("POST", URI, BODY + b" ", signature, stamp, ["client-secret"], NOW) is not None
    assert verify_hubspot_v3("POST", URI + "?x=1", BODY, signature, stamp, ["client-secret"], NOW) is not None
    assert verify_hubspot_v3("PUT", URI, BODY, signature, stamp, ["client-secret"], NOW) is not None
    later = str(int(stamp) + 1)
    assert verify_hubspot_v3("POST", URI, BODY, signature, later, ["client-secret"], NOW) is not None


def test_hubspot_rotation_accepts_both_secrets() -> None:
    stamp = str(int(NOW * 1000))
    for secret in ("old-secret", "new-secret"):
        signature = _documented_v3(secret, "POST", URI, BODY, stamp)
        assert verify_hubspot_v3("POST", URI, BODY, signature, stamp, ["new-secret", "old-secret"], NOW) is None


def test_hubspot_uri_is_signed_with_the_documented_escapes_decoded() -> None:
    encoded = "https://hooks.acme-analytics.io/webhooks/hubspot?portal%3A=48210567%2C1&q=a%20b%2fc"
    assert hubspot_signed_uri(encoded) == "https://hooks.acme-analytics.io/webhooks/hubspot?portal:=48210567,1&q=a%20b/c"
    stamp = str(int(NOW * 1000))
    signature = _documented_v3("client-secret", "POST", hubspot_signed_uri(encoded), BODY, stamp)
    assert verify_hubspot_v3("POST", encoded, BODY, signature, stamp, ["client-secret"], NOW) is None


@pytest.mark.parametrize("stamp", [None, "", "abc", "1.5e12", "-1", "١٢٣", "9" * 40])
def test_hubspot_malformed_timestamp_is_refused(stamp: str | None) -> None:
    signature = _documented_v3("client-secret", "POST", URI, BODY, "0")
    assert verify_hubspot_v3("POST", URI, BODY, signature, stamp, ["client-secret"], NOW) is not None


# --- Mautic --------------------------------------------------------------------------------------

def _mautic(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def test_mautic_good_wrong_tampered_rotated() -> None:
    body = raw("mautic_queued.json")
    assert verify_mautic(body, _mautic("mautic-key", body), ["mautic-key"]) is None
    assert verify_mautic(body, _mautic("wrong", body), ["mautic-key"]) is not None
    assert verify_mautic(body + b"\n", _mautic("mautic-key", body), ["mautic-key"]) is not None
    assert verify_mautic(body, _mautic("old", body), ["new", "old"]) is None
    assert verify_mautic(body, None, ["mautic-key"]) is not None
    assert verify_mautic(body, _mautic("", body), []) is not None


# --- write keys ----------------------------------------------------------------------------------

def test_bearer_write_key() -> None:
    assert verify_write_key_bearer("Bearer wk_live_123", ["wk_live_123"]) is None
    assert verify_write_key_bearer("bearer   wk_live_123 ", ["wk_live_123"]) is None
    assert verify_write_key_bearer("Bearer wk_live_124", ["wk_live_123"]) is not None
    assert verify_write_key_bearer("Bearer old", ["new", "old"]) is None
    assert verify_write_key_bearer("Basic d2s6", ["wk"]) is not None
    assert verify_write_key_bearer("Bearer ", ["wk"]) is not None
    assert verify_write_key_bearer(None, ["wk"]) is not None
    assert verify_write_key_bearer("Bearer x", []) is not None


def _basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_write_key_as_segment_clients_send_it() -> None:
    assert verify_basic_write_key(_basic("seg_wk_1"), ["seg_wk_1"]) is None
    assert verify_basic_write_key(_basic("seg_wk_1", "ignored"), ["seg_wk_1"]) is None
    assert verify_basic_write_key(_basic("seg_wk_2"), ["seg_wk_1"]) is not None
    assert verify_basic_write_key(_basic("old"), ["new", "old"]) is None
    assert verify_basic_write_key(_basic(""), ["seg_wk_1"]) is not None
    assert verify_basic_write_key("Basic !!!not-base64", ["seg_wk_1"]) is not None
    assert verify_basic_write_key("Basic " + base64.b64encode(b"\xff\xfe:").decode(), ["seg_wk_1"]) is not None
    assert verify_basic_write_key("Bearer seg_wk_1", ["seg_wk_1"]) is not None
    assert verify_basic_write_key(None, ["seg_wk_1"]) is not None


# --- never raise ---------------------------------------------------------------------------------

headers = st.none() | st.text(max_size=80) | st.sampled_from(["t=,v1=", "t=1,v1=", "t=99999999999999999999,v1=a",
                                                               "Basic ", "Bearer", "x" * 5000, "\x00"])


@settings(max_examples=300, deadline=None)
@given(header=headers, other=headers, body=st.binary(max_size=64), uri=st.text(max_size=40),
       method=st.text(max_size=8), now=st.floats(min_value=0, max_value=4e9))
def test_no_header_makes_any_check_raise(header: str | None, other: str | None, body: bytes, uri: str,
                                         method: str, now: float) -> None:
    secrets = ["s3cret", "old"]
    assert verify_generic(body, header, secrets, now) is not None
    assert verify_hubspot_v3(method, uri, body, header, other, secrets, now) is not None
    assert verify_mautic(body, header, secrets) is not None
    assert isinstance(verify_write_key_bearer(header, secrets) or "", str)
    assert isinstance(verify_basic_write_key(header, secrets) or "", str)
