"""The compose demo's stand-in CRM/alert receiver records POSTs, checks signatures and lists them."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.request
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from services.signing import sign

from .manifests import DEPLOY

NOW = 1_800_000_000.0


def load_receiver() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_receiver", DEPLOY / "demo_receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def receiver() -> Iterator[str]:
    module = load_receiver()
    server = module.make_server("127.0.0.1", 0, ["s3cret"], clock=lambda: NOW)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def call(url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_records_posts_with_their_signature_verdict_and_lists_them(receiver: str) -> None:
    body = json.dumps({"lead": {"id": "L1"}}).encode()
    good = {"X-Handoff-Signature": sign(body, "s3cret", int(NOW)), "Idempotency-Key": "L1:A1"}
    assert call(f"{receiver}/leads", "POST", body, good) == {"received": 1}
    bad = {"X-Handoff-Signature": sign(body, "wrong", int(NOW))}
    call(f"{receiver}/alerts", "POST", body, bad)

    listed = call(f"{receiver}/")
    assert listed["count"] == 2
    first, second = listed["requests"]
    assert first["path"] == "/leads" and first["body"] == {"lead": {"id": "L1"}}
    assert first["signature"] == "valid"
    assert first["headers"]["Idempotency-Key"] == "L1:A1"
    assert second["signature"].startswith("invalid")

    only_leads = call(f"{receiver}/leads")
    assert [item["id"] for item in only_leads["requests"]] == [1]


def test_health_and_clearing(receiver: str) -> None:
    assert call(f"{receiver}/healthz") == {"status": "ok"}
    call(f"{receiver}/x", "POST", b"not json")
    assert call(f"{receiver}/")["requests"][0]["body"] == "not json"
    call(f"{receiver}/", "DELETE")
    assert call(f"{receiver}/")["count"] == 0


def test_inbox_keeps_only_the_latest() -> None:
    inbox = load_receiver().Inbox(limit=2)
    for n in range(3):
        inbox.add({"path": f"/p{n}"})
    assert [item["path"] for item in inbox.list()] == ["/p1", "/p2"]
