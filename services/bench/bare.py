"""The ingest ceiling: a bare FastAPI app that only parses the same JSON, served like the real one.

    python -m services.bench.bare --port 8123

``POST /v1/touchpoints`` and ``POST /v1/touchpoints/batch`` read the body, parse it with orjson and
answer ``202 {"accepted": n, "duplicates": 0}``: no auth, no validation, no durability. Uvicorn runs
with the settings of :func:`services.serve.run` (same loop: uvloop when installed, via
:func:`services.serve.run_loop`; same garbage-collector tuning, HTTP parser, log level, lifespan off).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import orjson
import uvicorn
from fastapi import FastAPI, Request, Response

from services.http.errors import ORJSONResponse
from services.serve import run_loop, tune_gc


def create_bare_app() -> FastAPI:
    app = FastAPI(title="bench: bare endpoint", default_response_class=ORJSONResponse)

    @app.post("/v1/touchpoints", status_code=202)
    async def single(request: Request) -> Response:
        orjson.loads(await request.body())
        return ORJSONResponse({"accepted": 1, "duplicates": 0}, status_code=202)

    @app.post("/v1/touchpoints/batch", status_code=202)
    async def batch(request: Request) -> Response:
        payload = orjson.loads(await request.body())
        return ORJSONResponse({"accepted": len(payload["touchpoints"]), "duplicates": 0}, status_code=202)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.bench.bare")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    config = uvicorn.Config(create_bare_app(), host=args.host, port=args.port, log_level="warning",
                            lifespan="off", access_log=False, timeout_graceful_shutdown=5)
    tune_gc()  # as services.serve.run does
    run_loop(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
