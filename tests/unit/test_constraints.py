"""constraints.txt pins what ``make venv`` installs: every dependency the project names is pinned, and
the venv running the suite holds exactly the pinned versions (a fresh clone's venv always does)."""

from __future__ import annotations

import importlib.metadata as metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CONSTRAINTS = Path(__file__).resolve().parents[2] / "constraints.txt"


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not a 'name==version' pin"
            out[canonicalize_name(name)] = version
    return out


def test_every_dependency_the_project_names_is_pinned() -> None:
    pinned = pins()
    for text in metadata.requires("lead-handoff") or []:
        requirement = Requirement(text)
        extra = re.search(r"extra\s*==\s*['\"](\w+)['\"]", str(requirement.marker or ""))
        if requirement.marker is not None and not requirement.marker.evaluate(
                {"extra": extra.group(1) if extra else ""}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is not pinned: run `make lock`, then `make test`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{requirement.name}=={pinned[name]} in constraints.txt is outside pyproject's {requirement.specifier}")


def test_the_venv_holds_the_pinned_versions() -> None:
    wrong = {}
    for name, version in pins().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # a pin for another platform's dependency (markers), not installed here
        if installed != version:
            wrong[name] = (installed, version)
    assert not wrong, f"installed vs pinned: {wrong}; run `make venv` (a changed constraints.txt reinstalls)"
