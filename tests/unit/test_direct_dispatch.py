"""DirectDispatchApp: POSTs to a direct route's exact path skip FastAPI's stack; nothing else does."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi import APIRouter, Request, Response

from services.http.direct import DirectDispatchApp, DirectRoute
from services.http.errors import ORJSONResponse, install_error_handlers


def _app(calls: list[str]) -> DirectDispatchApp:
    app = DirectDispatchApp(title="t", default_response_class=ORJSONResponse)
    install_error_handlers(app)
    router = APIRouter()

    async def echo(request: Request) -> Response:
        calls.append(f"echo {request.method} {request.url.path} ?{request.url.query}")
        return ORJSONResponse({"body": (await request.body()).decode()}, status_code=202)

    async def broken(_request: Request) -> Response:
        raise RuntimeError("a bug")

    async def with_param(request: Request) -> Response:
        calls.append("with_param")
        return ORJSONResponse({"id": request.path_params.get("item")})

    router.add_api_route("/echo", echo, methods=["POST"], route_class_override=DirectRoute)
    router.add_api_route("/broken", broken, methods=["POST"], route_class_override=DirectRoute)
    router.add_api_route("/items/{item}", with_param, methods=["POST"], route_class_override=DirectRoute)
    app.include_router(router)
    app.add_direct_routes(router)

    @app.middleware("http")
    async def mark(request: Request, call_next):  # type: ignore[no-untyped-def]
        calls.append("middleware")
        return await call_next(request)

    return app


async def _client(app: DirectDispatchApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


async def test_a_post_to_a_direct_path_reaches_the_endpoint_without_the_middleware_stack() -> None:
    calls: list[str] = []
    async with await _client(_app(calls)) as client:
        r = await client.post("/echo", content=b"hello")
    assert (r.status_code, r.json()) == (202, {"body": "hello"})
    assert calls == ["echo POST /echo ?"]


async def test_only_exact_posts_without_a_query_string_are_dispatched_directly() -> None:
    calls: list[str] = []
    app = _app(calls)
    assert set(app.direct_endpoints) == {"/echo", "/broken"}  # a path with a parameter is not
    async with await _client(app) as client:
        r = await client.post("/echo?x=1", content=b"q")
        assert r.status_code == 202 and calls == ["middleware", "echo POST /echo ?x=1"]
        calls.clear()
        r = await client.get("/echo")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        assert calls == ["middleware"]
        calls.clear()
        r = await client.post("/items/7")
        assert r.status_code == 200 and calls == ["middleware", "with_param"]
        calls.clear()
        r = await client.post("/echo/")  # not the exact path: FastAPI's routing decides (a redirect)
        assert calls[0] == "middleware"


async def test_an_endpoint_that_raises_gets_the_logged_500_of_every_other_route(
        caplog: pytest.LogCaptureFixture) -> None:
    async with await _client(_app([])) as client:
        with caplog.at_level(logging.ERROR):
            r = await client.post("/broken", content=b"{}")
    assert r.status_code == 500
    assert r.json()["error"]["code"] == "internal_error"
    assert "a bug" not in r.text  # the details stay in the log
    assert any(rec.exc_info and "a bug" in str(rec.exc_info[1]) for rec in caplog.records)
