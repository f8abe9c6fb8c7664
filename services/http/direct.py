"""Direct endpoints: routes that read the raw request and answer it themselves, dispatched first.

    router.add_api_route("/v1/x", endpoint, methods=["POST"], route_class_override=DirectRoute,
                         openapi_extra=..., responses=...)     # documented like any route
    app = DirectDispatchApp(...)                               # a FastAPI app
    app.add_direct_routes(router)                              # POST /v1/x skips the middleware stack

The ingest endpoints are the service's hottest path (one small request per touchpoint). Each one reads
its own body (bounded), refuses bad input with the contract's error body and answers with a
``Response``; FastAPI's parameter solving, route matching and middleware layers add nothing to them
but cost about half of what a request spends in the app (``handoff bench``, ingest section). So a POST
to the exact path of a direct route, without a query string, is handed to its endpoint by the app's
``__call__``; everything else (other methods, paths, the OpenAPI document) goes through FastAPI as
usual. An endpoint that raises anyway gets the same logged 500 as the app's other routes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, cast

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.types import Receive, Scope, Send

from services.http.errors import internal_error

DirectEndpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class DirectRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` and returns a ``Response`` itself, called as is.

    Its body and responses are declared for the OpenAPI document only (``openapi_extra``,
    ``responses``): nothing is parsed or validated on its behalf.
    """

    def get_route_handler(self) -> DirectEndpoint:
        return cast(DirectEndpoint, self.endpoint)


class DirectDispatchApp(FastAPI):
    """A FastAPI app that hands POSTs to its direct routes' exact paths straight to their endpoints."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct_endpoints: dict[str, DirectEndpoint] = {}

    def add_direct_routes(self, router: APIRouter) -> None:
        """Dispatch ``router``'s POST-only direct routes without path parameters first (call it for a
        router included without a prefix: the route's own path is then the request's path)."""
        for route in router.routes:
            if isinstance(route, DirectRoute) and route.methods == {"POST"} and "{" not in route.path:
                self.direct_endpoints[route.path] = route.get_route_handler()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("query_string") \
                and not scope.get("root_path") and not self.root_path:
            endpoint = self.direct_endpoints.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                await _answer(endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _answer(endpoint: DirectEndpoint, scope: Scope, receive: Receive, send: Send) -> None:
    try:
        response = await endpoint(Request(scope, receive, send))
    except Exception as exc:
        response = internal_error(exc)
    await response(scope, receive, send)
