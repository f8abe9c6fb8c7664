"""Checks that need the environment, not just the file: secrets the config names must be set."""

from __future__ import annotations

import os
from collections.abc import Mapping

from services.config import HandoffConfig


def runtime_problems(config: HandoffConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """Warnings-as-errors for ``check-config``: names of env vars the config needs but that are unset."""
    env = os.environ if environ is None else environ
    problems = []
    for i, source in enumerate(config.sources):
        names = source.secret_env_names()
        if not names:
            problems.append(f"sources.{i}.secret_env: source {source.id!r} has no secret; every source needs one")
        elif not source.secrets(env):
            problems.append(f"sources.{i}.secret_env: none of {', '.join(names)} is set in the environment "
                            f"(source {source.id!r} would refuse every request)")
    return problems
