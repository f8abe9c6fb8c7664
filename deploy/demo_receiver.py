"""A stand-in CRM / alert receiver for the compose demo: records every POST and lists them.

    python deploy/demo_receiver.py --port 9000             # or HANDOFF_HTTP_HOST / HANDOFF_HTTP_PORT
    curl -X POST localhost:9000/leads -d '{"lead": {}}'    # recorded, answered 200
    curl localhost:9000/                                   # every recorded request, newest last
    curl localhost:9000/leads                              # only those POSTed under /leads
    curl -X DELETE localhost:9000/                         # forget them

When ``RECEIVER_SIGNING_SECRET`` (or ``--secret``) is set, each request's ``X-Handoff-Signature`` is
checked with the generic scheme and the verdict is recorded next to it, so the demo shows that pushes
are signed. ``GET /healthz`` answers 200 so the image's health check works for this process too.

Standard library only (plus ``services.signing`` when it is installed, as it is in the image).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Handoff-Signature"
KEPT_HEADERS = ("Content-Type", "Idempotency-Key", "X-Handoff-Signature", "User-Agent")
MAX_BODY = 1 << 20


class Inbox:
    """The recorded requests, oldest first; thread-safe, keeps the last ``limit``."""

    def __init__(self, limit: int = 1000) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=limit)
        self._lock = threading.Lock()
        self._next_id = 1

    def add(self, record: dict[str, Any]) -> int:
        with self._lock:
            record_id = self._next_id
            self._next_id += 1
            self._items.append({"id": record_id, **record})
            return record_id

    def list(self, path_prefix: str = "/") -> list[dict[str, Any]]:
        with self._lock:
            return [item for item in self._items if item["path"].startswith(path_prefix)]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def _load_verify() -> Callable[..., str | None] | None:
    try:
        from services.signing import verify
    except ImportError:  # run outside the project: record requests without checking signatures
        return None
    return verify


def make_server(
    host: str,
    port: int,
    secrets: Sequence[str] = (),
    inbox: Inbox | None = None,
    clock: Callable[[], float] = time.time,
) -> ThreadingHTTPServer:
    """A bound server (``port=0`` picks a free one: read ``server.server_address``); call serve_forever."""
    store = inbox if inbox is not None else Inbox()
    verify = _load_verify()

    class Handler(BaseHTTPRequestHandler):
        server_version = "handoff-demo-receiver/1"

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/healthz":
                self._answer(200, {"status": "ok"})
                return
            items = store.list(path)
            self._answer(200, {"count": len(items), "requests": items})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._answer(413, {"error": {"code": "too_large", "message": "body over 1 MiB"}})
                return
            raw = self.rfile.read(length)
            record_id = store.add(
                {
                    "received_at": datetime.fromtimestamp(clock(), UTC).isoformat(),
                    "path": urlsplit(self.path).path,
                    "headers": {name: self.headers[name] for name in KEPT_HEADERS if name in self.headers},
                    "signature": self._signature(raw),
                    "body": _decode(raw),
                }
            )
            self._answer(200, {"received": record_id})

        def do_DELETE(self) -> None:
            store.clear()
            self._answer(200, {"cleared": True})

        def _signature(self, raw: bytes) -> str:
            if not secrets or verify is None:
                return "unchecked"
            problem = verify(raw, self.headers.get(SIGNATURE_HEADER), secrets, now=clock())
            return "valid" if problem is None else f"invalid: {problem}"

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body, indent=2).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            # One line per request on stdout, so `docker compose logs crm-receiver` shows the traffic.
            print(f"{self.address_string()} {format % args}", flush=True)

    return ThreadingHTTPServer((host, port), Handler)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record POSTed requests and list them at GET /.")
    parser.add_argument("--host", default=os.environ.get("HANDOFF_HTTP_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("HANDOFF_HTTP_PORT", "8080")))
    parser.add_argument(
        "--secret",
        action="append",
        default=[s for s in os.environ.get("RECEIVER_SIGNING_SECRET", "").split(",") if s.strip()],
        help="check X-Handoff-Signature with this secret (repeatable; env RECEIVER_SIGNING_SECRET)",
    )
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, [s.strip() for s in args.secret])
    host, port = server.server_address[:2]
    print(f"demo receiver listening on http://{host!s}:{port}/ (GET / lists what arrived)", flush=True)
    # As PID 1 in a container a signal without a handler is ignored: stop promptly on `docker stop`.
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
