"""Bearer-token auth for the lead, report, rep and dashboard endpoints (constant-time, several tokens).

    @router.get("/v1/leads/{lead_id}", dependencies=[RequireToken])
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from services.http.deps import get_container
from services.http.errors import ApiError
from services.runtime import Container


def token_ok(presented: str, tokens: list[str]) -> bool:
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(presented.encode("utf-8", "replace"), token.encode("utf-8"))
    return ok


async def require_token(request: Request, container: Annotated[Container, Depends(get_container)]) -> None:
    tokens = container.api_tokens
    if not tokens:
        raise ApiError(401, "unauthorized", "no API token is configured on the server; set HANDOFF_API_TOKEN",
                       headers={"WWW-Authenticate": "Bearer"})
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        # The dashboard is opened in a browser: accept ?token= there too.
        presented = request.query_params.get("token", "")
    if not presented or not token_ok(presented.strip(), tokens):
        raise ApiError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)",
                       headers={"WWW-Authenticate": "Bearer"})


RequireToken = Depends(require_token)
