"""The OpenAPI links of the schema: present where both ends are served, never pointing at an operation
the process does not have (``handoff serve ingest`` has no ``/v1/leads``), and documentation only."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.app import IngestApi
from services.api.feedback import build_router as feedback_routes
from services.api.leads import build_router as lead_routes
from services.api.reps import build_router as rep_routes
from services.config import load_config
from services.http.app import create_app
from services.http.links import add_cross_service_links, dangling_links, operation_ref
from services.runtime import Container, ServicePart
from services.settings import Settings


def schema_of(*parts: str) -> dict[str, Any]:
    """The schema of a process serving ``parts`` (no database or bus: building the schema needs neither)."""
    config = load_config(None)
    built = {
        "ingest": lambda: ServicePart("ingest", routers=[IngestApi(config, writer=None).router()]),  # type: ignore[arg-type]
        "api": lambda: ServicePart("api", routers=[lead_routes(), feedback_routes(), rep_routes()]),
    }
    container = Container(settings=Settings(), config=config, db=None, bus=None, relay=None,  # type: ignore[arg-type]
                          parts={name: built[name]() for name in parts})
    return create_app(container).openapi()


def links_of(schema: dict[str, Any], path: str, method: str, status: str) -> dict[str, Any]:
    links: dict[str, Any] = schema["paths"][path][method]["responses"][status].get("links", {})
    return links


def test_one_process_links_a_touchpoint_to_its_lead() -> None:
    schema = schema_of("ingest", "api")
    lead = links_of(schema, "/v1/touchpoints", "post", "202")["LeadOfTouchpoint"]
    assert lead["operationRef"] == "#/paths/~1v1~1leads/get"
    assert lead["parameters"] == {"query.email": "$request.body#/email", "query.user_id": "$request.body#/user_id",
                                  "query.anonymous_id": "$request.body#/anonymous_id"}
    assert "LeadOfFirstTouchpoint" in links_of(schema, "/v1/touchpoints/batch", "post", "202")
    assert set(links_of(schema, "/v1/leads", "get", "200")) == {"FirstLead", "FeedbackOnFirstLead", "NextPage"}
    assert set(links_of(schema, "/v1/leads/{lead_id}/feedback", "post", "202")) == {"LeadAfterFeedback"}
    assert dangling_links(schema) == []


@pytest.mark.parametrize("parts", [("ingest",), ("api",)])
def test_a_split_service_links_only_to_what_it_serves(parts: tuple[str, ...]) -> None:
    schema = schema_of(*parts)
    assert dangling_links(schema) == []
    if parts == ("ingest",):
        assert links_of(schema, "/v1/touchpoints", "post", "202") == {}


def test_the_next_page_keeps_every_filter() -> None:
    schema = schema_of("api")
    taken = {p["name"] for p in schema["paths"]["/v1/leads"]["get"]["parameters"] if p["in"] == "query"}
    next_page = links_of(schema, "/v1/leads", "get", "200")["NextPage"]["parameters"]
    assert {name.removeprefix("query.") for name in next_page} == taken
    assert next_page["query.cursor"] == "$response.body#/next_cursor"


def test_cross_service_links_need_both_ends() -> None:
    schema: dict[str, Any] = {"paths": {"/v1/touchpoints": {"post": {"responses": {"202": {"description": "ok"}}}}}}
    assert add_cross_service_links(schema)["paths"]["/v1/touchpoints"]["post"]["responses"]["202"] == {
        "description": "ok"}
    schema["paths"]["/v1/leads"] = {"get": {"responses": {"200": {"description": "ok"}}}}
    assert "LeadOfTouchpoint" in links_of(add_cross_service_links(schema), "/v1/touchpoints", "post", "202")


@given(st.text(alphabet="/~{}_ab1", min_size=1, max_size=20))
def test_operation_ref_is_a_json_pointer_into_paths(path: str) -> None:
    pointer = operation_ref(path, "GET").removeprefix("#/paths/")
    escaped, method = pointer.rsplit("/", 1)
    assert method == "get" and "/" not in escaped
    assert escaped.replace("~1", "/").replace("~0", "~") == path
