"""decode_body / parse_json: bounded gzip, limits, depth, and the error hierarchy."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.body import (
    MAX_BODY_BYTES,
    BadBody,
    BodyTooLarge,
    IngestError,
    InvalidPayload,
    Unauthorized,
    UnknownSource,
    UnsupportedEncoding,
    decode_body,
    json_depth,
    parse_json,
)
from tests.unit.ingest.payloads import json_values, raw

LIMIT = MAX_BODY_BYTES


def test_identity_and_missing_encoding_return_the_body_unchanged() -> None:
    body = raw("generic_batch.json")
    assert decode_body(body, None) == body
    assert decode_body(body, "identity") == body
    assert decode_body(body, " Identity ") == body


def test_gzip_body_is_decompressed() -> None:
    body = raw("segment_batch.json")
    assert decode_body(gzip.compress(body), "gzip") == body
    assert decode_body(gzip.compress(body), "x-gzip") == body
    assert decode_body(gzip.compress(body), "GZIP") == body


def test_multi_member_gzip_and_trailing_padding_are_accepted_like_gzipfile() -> None:
    members = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
    assert gzip.decompress(members) == b'{"a": 1}'
    assert decode_body(members, "gzip") == b'{"a": 1}'
    assert decode_body(members + b"\x00\x00\x00", "gzip") == b'{"a": 1}'


def test_stacked_encodings_are_undone_in_reverse_order() -> None:
    body = b'{"type": "page_view"}'
    assert decode_body(gzip.compress(gzip.compress(body)), "gzip, gzip") == body
    assert decode_body(gzip.compress(body), "identity, gzip") == body


def test_body_exactly_at_the_limit_passes_and_one_byte_more_is_413() -> None:
    at_limit = b" " * (LIMIT - 2) + b"{}"
    assert decode_body(at_limit, None) == at_limit
    assert decode_body(gzip.compress(at_limit), "gzip") == at_limit
    with pytest.raises(BodyTooLarge) as exc:
        decode_body(at_limit + b" ", None)
    assert exc.value.status == 413
    with pytest.raises(BodyTooLarge):
        decode_body(gzip.compress(at_limit + b" "), "gzip")


def test_gzip_bomb_is_413_without_allocating_the_whole_expansion() -> None:
    # 64 MiB of zeros compresses to ~64 KiB: a small request that would expand 64x past the limit.
    bomb_stream = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = b"\x00" * (1024 * 1024)
    bomb = b"".join(bomb_stream.compress(chunk) for _ in range(64)) + bomb_stream.flush()
    assert len(bomb) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(BodyTooLarge) as exc:
            decode_body(bomb, "gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.code == "payload_too_large"
    assert peak < 4 * LIMIT, f"decompression peaked at {peak} bytes"


def test_corrupt_gzip_is_bad_body() -> None:
    with pytest.raises(BadBody) as exc:
        decode_body(b"this is not gzip at all", "gzip")
    assert exc.value.status == 400
    assert "gzip" in exc.value.message


def test_truncated_gzip_is_bad_body() -> None:
    data = gzip.compress(raw("segment_batch.json"))
    with pytest.raises(BadBody, match="truncated"):
        decode_body(data[: len(data) // 2], "gzip")
    with pytest.raises(BadBody):
        decode_body(b"", "gzip")


def test_garbage_after_a_gzip_member_is_bad_body() -> None:
    with pytest.raises(BadBody):
        decode_body(gzip.compress(b"{}") + b"garbage", "gzip")


@pytest.mark.parametrize("encoding", ["br", "deflate", "compress", "gzip, br", "zstd"])
def test_unknown_encoding_is_415(encoding: str) -> None:
    with pytest.raises(UnsupportedEncoding) as exc:
        decode_body(b"{}", encoding)
    assert exc.value.status == 415
    assert exc.value.details == {"supported": ["gzip", "identity"]}


def test_parse_json_returns_the_value() -> None:
    assert parse_json(b'{"touchpoints": [{"type": "x"}]}') == {"touchpoints": [{"type": "x"}]}
    assert parse_json(b"[]") == []


@pytest.mark.parametrize("body", [b"", b"   \n", b"{", b'{"a": 1,}', b"NaN", b"\xff\xfe{}", b"{'a': 1}"])
def test_invalid_json_is_bad_body_saying_what_is_wrong(body: bytes) -> None:
    with pytest.raises(BadBody) as exc:
        parse_json(body)
    assert exc.value.status == 400
    assert "JSON" in exc.value.message or "empty" in exc.value.message


def test_depth_limit_is_enforced_at_exactly_max_depth() -> None:
    ok = b"[" * 32 + b"]" * 32
    assert json_depth(parse_json(ok)) == 32
    with pytest.raises(BadBody, match="deeper than 32"):
        parse_json(b"[" * 33 + b"]" * 33)
    with pytest.raises(BadBody):
        parse_json(b'{"a":' * 33 + b"1" + b"}" * 33)
    assert parse_json(b"[[1]]", max_depth=2) == [[1]]
    with pytest.raises(BadBody):
        parse_json(b"[[[1]]]", max_depth=2)


def test_hostile_nesting_far_past_any_recursion_limit_is_bad_body_not_a_crash() -> None:
    for depth in (1_000, 100_000):
        with pytest.raises(BadBody):
            parse_json(b"[" * depth + b"]" * depth)


def test_json_depth_counts_containers_not_scalars() -> None:
    assert json_depth(1) == 0
    assert json_depth({}) == 1
    assert json_depth({"a": [1, {"b": []}]}) == 4
    assert json_depth([[1], [[2]]]) == 3


def test_errors_carry_status_code_and_the_contract_body() -> None:
    cases = [(BodyTooLarge("x"), 413, "payload_too_large"), (BadBody("x"), 400, "bad_body"),
             (UnsupportedEncoding("x"), 415, "unsupported_encoding"), (Unauthorized("x"), 401, "unauthorized"),
             (UnknownSource("x"), 404, "unknown_source")]
    for error, status, code in cases:
        assert isinstance(error, IngestError)
        assert (error.status, error.code) == (status, code)
        assert error.to_body() == {"error": {"code": code, "message": "x", "details": None}}
    invalid = InvalidPayload([{"field": "touchpoints.3.email", "message": "is not a valid email address"}])
    assert invalid.status == 422
    assert "touchpoints.3.email" in invalid.message
    assert invalid.to_body()["error"]["details"] == [{"field": "touchpoints.3.email",
                                                      "message": "is not a valid email address"}]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), encoding=st.none() | st.sampled_from(["gzip", "identity", "x-gzip", "br"])
       | st.text(max_size=20))
def test_decode_and_parse_only_ever_raise_ingest_errors(data: bytes, encoding: str | None) -> None:
    try:
        parse_json(decode_body(data, encoding, limit=256), max_depth=4)
    except IngestError:
        pass


@settings(max_examples=80, deadline=None)
@given(value=json_values)
def test_gzip_round_trip_of_any_json(value: object) -> None:
    body = orjson.dumps(value)
    assert parse_json(decode_body(gzip.compress(body), "gzip")) == orjson.loads(body)
