"""Schemathesis over the whole OpenAPI schema of a real ``handoff up`` process: no input of any shape
yields a 5xx, and every answer matches the schema. Ingest operations are called with a source's write
key, the others with the API token, so the fuzzing reaches past authentication."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

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
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 15, "the schema lost operations"
    failures: list[str] = []
    for operation in operations:
        fuzz(operation, service.url, failures)
    assert not failures, "\n".join(dict.fromkeys(failures))
