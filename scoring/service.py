"""The ``scoring`` service: the touchpoint consumer over the configured rules."""

from __future__ import annotations

from services.consumer import ConsumerRunner
from services.runtime import Container, ServicePart


def build(container: Container) -> ServicePart:
    from scoring.consumer import ScoringHandler
    from scoring.rules import RuleSet

    rules = RuleSet.from_config(container.config.scoring)  # a bad rule refuses to start, naming it
    runner = ConsumerRunner(container.db, container.bus, ScoringHandler(container.db, rules))
    container.extras.setdefault("runners", []).append(runner)
    return ServicePart(name="scoring", tasks=[runner.run])
