"""Fixtures of the fault suite: a fresh PostgreSQL database and a broker of its own per case, a seed.

The cases run the service split across real processes (``tests.support.split``) on the Kafka-protocol
broker (Tansu) and PostgreSQL. With ``CI=true`` a missing broker or PostgreSQL fails the run.
``FAULTS_SEED=<n>`` replays a run (the seed is printed with each case's figures).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest

from tests.support.infra import Broker, postgres_database, running_broker


@pytest.fixture
def fault_db() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (the cluster's ``handoff migrate`` creates the schema)."""
    with postgres_database("handoff_faults") as url:
        yield url


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A broker of the case's own. Consumer group ids (``scoring``, ``router``, ``notifier``) do not carry
    the topic prefix, so clusters sharing a broker would share groups: a member SIGKILLed in one case
    would still be in the group the next case joins."""
    with running_broker() as b:
        yield b


@pytest.fixture
def seed() -> int:
    value = os.environ.get("FAULTS_SEED")
    return int(value) if value else random.SystemRandom().randrange(1_000_000)
