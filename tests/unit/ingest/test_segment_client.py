"""What the real segment-analytics-python client sends (captured in-process, no network) passes the
write-key check, gzip decoding, JSON parsing and the Segment adapter."""

from __future__ import annotations

from typing import Any

import pytest
from segment.analytics import Client
from segment.analytics import request as segment_request

from ingest.adapters import segment
from ingest.body import decode_body, parse_json
from ingest.signatures import verify_basic_write_key
from tests.unit.ingest.payloads import RECEIVED_AT


class _Captured:
    status_code = 200
    headers: dict[str, str] = {}
    reason = "OK"

    def json(self) -> dict[str, Any]:
        return {"success": True}


@pytest.mark.parametrize("use_gzip", [False, True])
def test_real_client_requests_are_accepted(monkeypatch: pytest.MonkeyPatch, use_gzip: bool) -> None:
    sent: list[tuple[str, bytes | str, dict[str, str]]] = []

    def fake_post(url: str, data: bytes | str, headers: dict[str, str], **_: Any) -> _Captured:
        sent.append((url, data, headers))
        return _Captured()

    monkeypatch.setattr(segment_request._session, "post", fake_post)
    client = Client("seg_wk_test", host="http://127.0.0.1:9", sync_mode=True, gzip=use_gzip, max_retries=0)
    client.page(anonymous_id="anon-1", name="Pricing", properties={"url": "https://acme.com/pricing"},
                context={"campaign": {"name": "q4-webinar"}})
    client.track(anonymous_id="anon-1", event="Demo Requested", properties={"form": "demo"}, message_id="m-2")
    client.identify(user_id="u-42", anonymous_id="anon-1", traits={"email": "Jane.Doe@Acme.com",
                                                                  "title": "VP Sales"})
    client.alias(previous_id="anon-1", user_id="u-42")
    client.group(user_id="u-42", group_id="acct-1", traits={"name": "Acme"})

    touchpoints = []
    for url, data, headers in sent:
        assert url == "http://127.0.0.1:9/v1/batch"
        assert verify_basic_write_key(headers["Authorization"], ["seg_wk_test"]) is None
        assert verify_basic_write_key(headers["Authorization"], ["another-key"]) is not None
        assert ("Content-Encoding" in headers) is use_gzip
        raw = data.encode() if isinstance(data, str) else data
        payload = parse_json(decode_body(raw, headers.get("Content-Encoding")))
        touchpoints += segment.parse(payload, "segment", RECEIVED_AT, kind="batch")

    page, track, identify, alias, group = touchpoints
    assert (page.type, page.properties["path"], page.campaign) == ("page_view", "/pricing", "q4-webinar")
    assert (track.type, track.event_id, track.anonymous_id) == ("demo_requested", "m-2", "anon-1")
    assert (identify.user_id, identify.anonymous_id, identify.email) == ("u-42", "anon-1", "jane.doe@acme.com")
    assert (alias.previous_id, alias.user_id) == ("anon-1", "u-42")
    assert group.traits == {"group_id": "acct-1", "company": "Acme"}
    assert len({tp.event_id for tp in touchpoints}) == 5  # the client's messageIds
