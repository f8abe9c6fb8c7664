"""``handoff bench``: the one place performance is measured (see :mod:`services.bench.cli`)."""
