"""OpenAPI links: which answer carries a value that another operation takes (documentation only).

A route declares its links next to its own responses::

    @router.get("/v1/reps", responses=ok_links(200, "The configured reps", REPS_LINKS))

and :func:`add_cross_service_links` adds, when the app assembles its schema, the links between two
services' operations (a touchpoint -> its lead) only if this process serves both ends: in the split
mode, ``handoff serve ingest`` has no ``/v1/leads`` to link to. Clients and tools (schemathesis's
stateful tests, code generators) follow them; the server's behaviour does not depend on them.

Targets are named by ``operationRef`` (the path and method, which the contract fixes) rather than by
FastAPI's generated ``operationId``, which changes whenever a handler is renamed.
"""

from __future__ import annotations

from typing import Any

LEAD = "/v1/leads/{lead_id}"
LEADS = "/v1/leads"
FEEDBACK = "/v1/leads/{lead_id}/feedback"
REP = "/v1/reps/{rep_id}"
TOUCHPOINT = "/v1/touchpoints"
TOUCHPOINT_BATCH = "/v1/touchpoints/batch"


def operation_ref(path: str, method: str) -> str:
    """``/v1/leads/{lead_id}``, ``get`` -> ``#/paths/~1v1~1leads~1{lead_id}/get`` (a JSON pointer)."""
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method.lower()


def link(path: str, method: str, description: str, parameters: dict[str, str]) -> dict[str, Any]:
    """One link object. ``parameters``: ``location.name`` (``path.lead_id``) -> runtime expression
    (``$response.body#/id``, ``$request.query.stage``)."""
    return {"operationRef": operation_ref(path, method), "description": description, "parameters": parameters}


def ok_links(status: int, description: str, links: dict[str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """A ``responses=`` entry for a route's success status carrying its links (FastAPI merges the
    response model's content into it)."""
    return {status: {"description": description, "links": links}}


# -- links between the read API's own operations (declared on their routes) ----------------------

# Every filter of GET /v1/leads: the next page repeats them with the cursor (the cursor alone is a position).
LIST_QUERY = ("email", "user_id", "anonymous_id", "stage", "owner", "team", "source", "campaign", "created_from",
              "created_to", "qualified_from", "qualified_to", "limit")

LEAD_LINKS = {
    "FeedbackOnLead": link(FEEDBACK, "post", "Give sales' feedback on this lead",
                           {"path.lead_id": "$response.body#/id"}),
    "LeadOwner": link(REP, "put", "The rep the lead is assigned to (absent while unassigned)",
                      {"path.rep_id": "$response.body#/assignment/rep_id"}),
    "LeadsOfOwner": link(LEADS, "get", "The leads of the same rep",
                         {"query.owner": "$response.body#/assignment/rep_id"}),
}
LIST_LINKS = {
    "FirstLead": link(LEAD, "get", "Open the page's first lead", {"path.lead_id": "$response.body#/items/0/id"}),
    "FeedbackOnFirstLead": link(FEEDBACK, "post", "Give feedback on the page's first lead",
                                {"path.lead_id": "$response.body#/items/0/id"}),
    "NextPage": link(LEADS, "get", "The next page: the same filters and next_cursor as cursor (null: no more)",
                     {"query.cursor": "$response.body#/next_cursor",
                      **{f"query.{name}": f"$request.query.{name}" for name in LIST_QUERY}}),
}
FEEDBACK_LINKS = {
    "LeadAfterFeedback": link(LEAD, "get", "The lead at its new stage",
                              {"path.lead_id": "$response.body#/lead_id"}),
}
REPS_LINKS = {
    "UpdateFirstRep": link(REP, "put", "Set the first rep's availability or capacity",
                           {"path.rep_id": "$response.body#/items/0/id"}),
    "LeadsOfFirstRep": link(LEADS, "get", "The first rep's leads", {"query.owner": "$response.body#/items/0/id"}),
}
REP_LINKS = {
    "LeadsOfRep": link(LEADS, "get", "The rep's leads", {"query.owner": "$response.body#/id"}),
}

# -- links from one service's operation to another's (added by the app when both are served) -----

_IDENTITY = ("email", "user_id", "anonymous_id")
CROSS_SERVICE_LINKS: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {
    (TOUCHPOINT, "post", "202"): {
        "LeadOfTouchpoint": link(
            LEADS, "get", "The lead the touchpoint joins, by the identity it carried (the pipeline is "
                          "asynchronous: right after the 202 the lead may not be scored yet)",
            {f"query.{name}": f"$request.body#/{name}" for name in _IDENTITY}),
    },
    (TOUCHPOINT_BATCH, "post", "202"): {
        "LeadOfFirstTouchpoint": link(
            LEADS, "get", "The lead the batch's first touchpoint joins (once scored)",
            {f"query.{name}": f"$request.body#/touchpoints/0/{name}" for name in _IDENTITY}),
    },
}


def _resolves(schema: dict[str, Any], ref: str) -> bool:
    path, _, method = ref.removeprefix("#/paths/").rpartition("/")
    return method in schema.get("paths", {}).get(path.replace("~1", "/").replace("~0", "~"), {})


def add_cross_service_links(schema: dict[str, Any]) -> dict[str, Any]:
    """Add :data:`CROSS_SERVICE_LINKS` whose source and target are both in ``schema`` (in place; returned)."""
    paths = schema.get("paths", {})
    for (path, method, status), links in CROSS_SERVICE_LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is None:
            continue
        for name, definition in links.items():
            if _resolves(schema, definition["operationRef"]):
                response.setdefault("links", {})[name] = definition
    return schema


def dangling_links(schema: dict[str, Any]) -> list[str]:
    """``"GET /v1/leads 200 FirstLead"`` for every link whose target this schema does not have."""
    found = []
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            for status, response in operation.get("responses", {}).items():
                for name, definition in response.get("links", {}).items():
                    if not _resolves(schema, definition.get("operationRef", "")):
                        found.append(f"{method.upper()} {path} {status} {name}")
    return found
