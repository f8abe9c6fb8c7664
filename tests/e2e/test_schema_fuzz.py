"""Schemathesis over the whole OpenAPI schema of a real ``handoff up`` process: no input of any shape
yields a 5xx, and every answer matches the schema. Ingest operations are called with a source's write
key, the others with the API token, so the fuzzing reaches past authentication.

Two runs: every operation alone (stateless), then chains that follow the schema's OpenAPI links
(stateful: a touchpoint -> its lead -> feedback -> the lead at its new stage, reps -> a rep's leads, ...),
so the ids in later calls are real ones and the fuzzing reaches past the 404s."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle
from schemathesis.checks import not_a_server_error
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput, normalize_name
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.stateful import is_root_allowed, transition

from services.http.links import dangling_links
from tests.support.infra import free_port
from tests.support.pipeline import API_TOKEN, TEST_SECRETS, WEBSITE_KEY
from tests.support.processes import HandoffProcess, handoff_process

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HandoffProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {**TEST_SECRETS, "HANDOFF_API_TOKEN": API_TOKEN, "HANDOFF_LOG_LEVEL": "WARNING",
           "HANDOFF_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'handoff.db'}"}
    with handoff_process(["up"], env, free_port(), tmp / "handoff.log") as proc:
        yield proc


def _headers(path: str) -> dict[str, str]:
    if path.startswith(("/v1/touchpoints", "/webhooks/{source_id}")):
        return {"Authorization": f"Bearer {WEBSITE_KEY}"}
    return {"Authorization": f"Bearer {API_TOKEN}"}


def fuzz(operation: Any, base_url: str, failures: list[str]) -> None:
    """Up to 25 generated requests against one operation; failures are collected, not raised."""

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=_headers(operation.path), timeout=10)
        for check in (not_a_server_error, response_schema_conformance):
            try:
                case.validate_response(response, checks=[check])
            except Exception as exc:  # schemathesis raises a group of failures; keep the first line of each
                failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:400]}")
                return

    run()


def test_no_operation_answers_5xx_or_off_schema(service: HandoffProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15, "the schema lost operations"
    failures: list[str] = []
    for operation in operations:
        fuzz(operation, service.url, failures)
    assert not failures, "\n".join(dict.fromkeys(failures)) + f"\nthe service's log:\n{service.log()}"


# -- stateful: chains along the schema's links ----------------------------------------------------

# (method, path, status, link name): the links the stateful run relies on; each must stay in the schema.
EXPECTED_LINKS = {
    ("POST", "/v1/touchpoints", "202", "LeadOfTouchpoint"),
    ("POST", "/v1/touchpoints/batch", "202", "LeadOfFirstTouchpoint"),
    ("GET", "/v1/leads", "200", "FirstLead"),
    ("GET", "/v1/leads", "200", "FeedbackOnFirstLead"),
    ("GET", "/v1/leads", "200", "NextPage"),
    ("GET", "/v1/leads/{lead_id}", "200", "FeedbackOnLead"),
    ("GET", "/v1/leads/{lead_id}", "200", "LeadOwner"),
    ("GET", "/v1/leads/{lead_id}", "200", "LeadsOfOwner"),
    ("POST", "/v1/leads/{lead_id}/feedback", "202", "LeadAfterFeedback"),
    ("GET", "/v1/reps", "200", "UpdateFirstRep"),
    ("GET", "/v1/reps", "200", "LeadsOfFirstRep"),
    ("PUT", "/v1/reps/{rep_id}", "200", "LeadsOfRep"),
}
# People the run starts from: a demo request from a senior title is fast-tracked to MQL and assigned.
SEEDS = [f"stateful-{n}@bigco.example" for n in range(3)]
# Entry points schemathesis's heuristics do not pick as roots (it guesses that `user_id` must come from
# an earlier call); without them the touchpoint -> lead link would never be followed.
EXTRA_ROOTS = [("POST", "/v1/touchpoints"), ("POST", "/v1/touchpoints/batch"), ("GET", "/v1/leads")]


def test_the_schema_links_operations(service: HandoffProcess) -> None:
    raw = httpx.get(f"{service.url}/openapi.json", timeout=10).json()
    found = {(method.upper(), path, status, name)
             for path, operations in raw["paths"].items() for method, operation in operations.items()
             for status, response in operation["responses"].items() for name in response.get("links", {})}
    assert EXPECTED_LINKS <= found, f"links missing from the schema: {sorted(EXPECTED_LINKS - found)}"
    assert not dangling_links(raw)


def seed_leads(service: HandoffProcess) -> None:
    """Send the seed people's demo requests and wait (polling) until each is an assigned lead."""
    with httpx.Client(base_url=service.url, timeout=10) as client:
        for email in SEEDS:
            r = client.post("/v1/touchpoints", headers=_headers("/v1/touchpoints"), json={
                "event_id": f"seed-{email}", "type": "form_submit", "email": email,
                "properties": {"form": "demo"}, "traits": {"title": "VP Marketing", "country": "US"}})
            assert r.status_code == 202, r.text
        deadline = time.monotonic() + 30
        while True:
            leads = [client.get("/v1/leads", params={"email": email}, headers=_headers("/v1/leads")).json()["items"]
                     for email in SEEDS]
            if all(found and found[0].get("assignment") for found in leads):
                return
            assert time.monotonic() < deadline, \
                f"the seed leads were not assigned in 30 s: {leads}; the log:\n{service.log()}"
            time.sleep(0.1)


def from_a_seed(case: schemathesis.Case, event_id: uuid.UUID, email: str, type_: str) -> schemathesis.Case:
    """The case with a valid touchpoint from one of the seed people as its body (a batch of one for the
    batch endpoint): the link from its 202 then leads to a lead that exists."""
    touchpoint: dict[str, Any] = {"event_id": event_id.hex, "email": email, "type": type_,
                                  "properties": {"path": "/pricing", "form": "demo"}}
    case.body = {"touchpoints": [touchpoint]} if case.operation.path.endswith("/batch") else touchpoint
    return case


def workflow(schema: Any, base_url: str, followed: Counter[str], answers: Counter[str]) -> Any:
    """The schema's state machine, calling ``base_url`` with credentials, checking no 5xx and the schema.
    It counts in ``followed`` each link transition whose values were used (``"... [inferred]"``: a link
    schemathesis inferred itself), and in ``answers`` each ``"<operation> <status>"``."""
    base = schema.as_state_machine()
    roots: dict[str, Any] = {}
    for method, path in EXTRA_ROOTS:
        operation = schema[path][method]
        name = normalize_name(f"RANDOM -> {operation.label}")
        if name in base.root_rules:
            continue
        cases = operation.as_strategy()
        if method == "POST":  # half the touchpoints are generated, half are valid ones from a seed person
            cases = st.one_of(cases, st.builds(from_a_seed, cases, st.uuids(), st.sampled_from(SEEDS),
                                               st.sampled_from(["page_view", "form_submit", "webinar_attended"])))
        roots[name] = transition(name=name, target=Bundle("catch_all"), precondition=is_root_allowed(operation.label),
                                 input=cases.map(StepInput.initial))

    class Workflow(base):  # type: ignore[misc, valid-type]
        root_rules = base.root_rules | frozenset(roots)
        _root_labels = base._root_labels | {schema[p][m].label for m, p in EXTRA_ROOTS}

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"base_url": base_url, "headers": _headers(case.operation.path), "timeout": 10}

        def validate_response(self, response: Any, case: schemathesis.Case, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance],
                                   transport_kwargs=kwargs, recorder=self.recorder)

        def step(self, input: StepInput) -> StepOutput:
            if input.transition is not None and input.is_applied:
                followed[input.transition.id + (" [inferred]" if input.transition.is_inferred else "")] += 1
            output = super().step(input)
            answers[f"{input.case.operation.label} {output.response.status_code}"] += 1
            return output

    for name, rule in roots.items():  # before the first run: Hypothesis collects a class's rules then
        setattr(Workflow, name, rule)
    return Workflow


def test_link_chains_answer_no_5xx_and_stay_on_schema(service: HandoffProcess) -> None:
    seed_leads(service)
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
    followed: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    try:
        workflow(schema, service.url, followed, answers).run(settings=settings(
            max_examples=15, stateful_step_count=20, deadline=None, database=None, phases=[Phase.generate],
            suppress_health_check=list(HealthCheck)))
    except Exception as exc:  # a 5xx's traceback is in the service's log, not in the response
        exc.add_note(f"the service's log:\n{service.log()}")
        raise
    explicit = {name: count for name, count in followed.items() if not name.endswith("[inferred]")}
    print(f"{sum(answers.values())} calls, {sum(followed.values())} along links:",
          *[f"{count:4d} {name}" for name, count in sorted(followed.items()) + sorted(answers.items())], sep="\n")
    # The run went along the links, not just around the roots: from a touchpoint to its lead, from a
    # page of leads into one lead, from the reps to one rep. (In 16 runs of these settings, each was
    # followed 5+ times, and the links 60-135 times in all.)
    for names in (("LeadOfTouchpoint", "LeadOfFirstTouchpoint"), ("FirstLead",), ("UpdateFirstRep",)):
        assert any(f" {name} -> " in transition for transition in explicit for name in names), (names, followed)
    assert sum(explicit.values()) >= 20, followed
