"""The dashboard in a real browser, after a real ``handoff simulate`` against a real ``handoff up``.

``handoff up`` runs as a subprocess (SQLite file, embedded bus, its config's demo inbox on the same
port), ``handoff simulate`` sends 40 buyer journeys and plays sales, then headless Chromium (Debian's
``chromium`` package) loads ``/dashboard``: the DOM must carry the numbers of ``GET /v1/reports/funnel``
and a screenshot is saved to ``test-output/dashboard.png`` (and the test's tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.config import example_config_text
from tests.support.infra import free_port, unavailable, wait_for_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "test-output"
BIN = Path(sys.executable).parent
TOKEN = "e2e-dashboard-token"
KEYS = {"WEBSITE_WEBHOOK_SECRET": "e2e-website-key", "SEGMENT_WRITE_KEY": "e2e-segment-key",
        "CRM_SIGNING_SECRET": "e2e-crm-secret", "PD_ROUTING_KEY": "e2e-pd-key",
        "HUBSPOT_CLIENT_SECRET": "e2e-hubspot", "MAUTIC_WEBHOOK_SECRET": "e2e-mautic"}
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
        if found:
            return found
    unavailable("headless Chromium is not installed: apt-get install -y chromium")
    raise AssertionError("unreachable")


class Ids(HTMLParser):
    """Every element with an id: its attributes and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.attrs: dict[str, dict[str, str | None]] = {}
        self.text: dict[str, str] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.attrs[str(found["id"])] = found
            self.text[str(found["id"])] = ""
            self._open.append(str(found["id"]))
        else:
            self._open.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for dom_id in self._open:
            if dom_id:
                self.text[dom_id] += data


def parse(page: str) -> Ids:
    ids = Ids()
    ids.feed(page)
    return ids


@pytest.fixture
def service(tmp_path: Path) -> Iterator[str]:
    """``handoff up`` on a free loopback port; yields its base URL."""
    port = free_port()
    config = example_config_text().replace("127.0.0.1:8080", f"127.0.0.1:{port}")
    (tmp_path / "handoff.yaml").write_text(config)
    env = {**os.environ, **KEYS, "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'handoff.db'}",
           "HANDOFF_HTTP_PORT": str(port), "HANDOFF_HTTP_HOST": "127.0.0.1", "HANDOFF_API_TOKEN": TOKEN,
           "HANDOFF_CONFIG": str(tmp_path / "handoff.yaml"), "HANDOFF_LOG_LEVEL": "WARNING",
           "HANDOFF_KAFKA_BOOTSTRAP": ""}
    log = open(tmp_path / "up.log", "wb")  # owned by the process: closed after it ends
    proc = subprocess.Popen([str(BIN / "handoff"), "up"], cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        if not wait_for_port(port, timeout=60, proc=proc):
            pytest.fail(f"handoff up did not start:\n{(tmp_path / 'up.log').read_text()[-3000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def settled_report(client: httpx.Client, base: str) -> dict[str, Any]:
    """The funnel report once two reads a second apart agree (the pipeline has caught up)."""
    previous: dict[str, Any] | None = None
    deadline = time.monotonic() + 30
    while True:
        r = client.get(f"{base}/v1/reports/funnel", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200, r.text
        current = r.json()
        current.pop("generated_at")
        if current == previous or time.monotonic() > deadline:
            return current
        previous = current
        time.sleep(1.0)


def test_dashboard_after_simulate_in_headless_chromium(service: str, tmp_path: Path) -> None:
    browser = chromium()
    env = {**os.environ, **KEYS, "HANDOFF_LOG_LEVEL": "WARNING"}
    sim = subprocess.run([str(BIN / "handoff"), "simulate", "--leads", "40", "--seed", "3", "--url", service,
                          "--token", TOKEN, "--concurrency", "6"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert "40/40 journeys (100%)" in sim.stdout and "leads in each stage now:" in sim.stdout

    url = f"{service}/dashboard?token={TOKEN}"
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"]
    with httpx.Client(timeout=30) as client:
        # Capture the page between two identical reports, so a late stage change (the pipeline is
        # asynchronous) cannot make the page and the report disagree; try again if one slipped in.
        for _attempt in range(5):
            report = settled_report(client, service)
            raw = client.get(f"{service}/dashboard", params={"token": TOKEN})
            dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=90)
            after = client.get(f"{service}/v1/reports/funnel", headers={"Authorization": f"Bearer {TOKEN}"}).json()
            after.pop("generated_at")
            if after == report:
                break
        sql_leads = client.get(f"{service}/v1/leads", params={"stage": "sql", "limit": 200},
                               headers={"Authorization": f"Bearer {TOKEN}"}).json()["items"]
    assert raw.status_code == 200
    totals = report["totals"]
    reached = {row["stage"]: row["reached"] for row in totals["stages"]}
    assert reached["anonymous"] >= 30 and reached["sql"] > 0 and reached["won"] > 0 and reached["disqualified"] > 0
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / "dashboard.png"
    taken = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1366,900", url],
                           capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    OUTPUT.mkdir(exist_ok=True)
    shutil.copy(shot, OUTPUT / "dashboard.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    # The same numbers in the browser's DOM (scripts ran) and in the server's HTML (no JavaScript).
    for page in (dom.stdout, raw.text):
        ids = parse(page)

        def value(dom_id: str, ids: Ids = ids) -> str | None:
            assert dom_id in ids.attrs, f"no element #{dom_id} on the dashboard"
            return ids.attrs[dom_id].get("data-value")

        for stage, count in reached.items():
            assert value(f"reached-{stage}") == str(count), stage
        month = report["marketing_sla"]
        assert value("mql-count") == str(month["mql_so_far"]) and value("mql-target") == "200"
        assert ids.text["mql-count"].strip() == str(month["mql_so_far"])
        assert value("speed-p50") == json.dumps(totals["speed_to_lead"]["p50_seconds"]).replace("null", "")
        assert value("sla-compliance") == json.dumps(totals["sla"]["compliance"]).replace("null", "")
        assert value("awaiting-count") == str(len(sql_leads))
        leak = totals["leak"]
        assert ids.attrs["leak-point"].get("data-from") == leak["from"]
        assert ids.attrs["leak-point"].get("data-to") == leak["to"]
        assert "demo-inbox" in ids.attrs
