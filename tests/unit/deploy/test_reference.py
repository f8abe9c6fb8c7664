"""The generated configuration reference covers every setting and config key, and the README holds it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from services import reference
from services.config import HandoffConfig, example_config_text
from services.settings import Settings

from .manifests import DEPLOY, K8S

README = DEPLOY / "README.md"


def reference_keys(text: str) -> set[str]:
    """The first cell of every table row: `HANDOFF_X` or a key path."""
    return set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.MULTILINE))


def yaml_paths(data: Any, prefix: str = "") -> set[str]:
    """Key paths of a parsed config, written the reference's way; matcher contents are not keys."""
    paths: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            path = f"{prefix}{key}"
            paths.add(path)
            if key in ("when",) or prefix == "qualification.disqualify[].":
                continue
            if path == "teams":
                for team in value.values():
                    paths |= yaml_paths(team, "teams.<name>.")
            elif path != "qualification.disqualify":
                paths |= yaml_paths(value, f"{path}.")
    elif isinstance(data, list):
        for item in data:
            paths |= yaml_paths(item, prefix[:-1] + "[].")
    return paths


def test_every_setting_is_documented_with_its_env_var_and_default() -> None:
    text = reference.render_reference()
    keys = reference_keys(text)
    for name, field in Settings.model_fields.items():
        variable = f"HANDOFF_{name.upper()}"
        assert variable in keys, f"{variable} is missing from the reference"
        assert field.description, f"Settings.{name} needs a description (it is the reference's meaning)"
    rows = {row.key: row for row in reference.settings_entries()}
    assert rows["HANDOFF_HTTP_PORT"].default == "`8080`"
    assert rows["HANDOFF_KAFKA_BOOTSTRAP"].default == "empty"
    assert rows["HANDOFF_API_TOKEN"].default == "not set"
    assert rows["HANDOFF_KAFKA_PARTITIONS"].type.startswith("integer")


def test_every_key_of_the_shipped_configs_is_in_the_reference() -> None:
    keys = reference_keys(reference.render_reference())
    for origin, text in (
        ("handoff.example.yaml", example_config_text()),
        ("deploy/handoff.compose.yaml", (DEPLOY / "handoff.compose.yaml").read_text(encoding="utf-8")),
        ("deploy/k8s/handoff.yaml", (K8S / "handoff.yaml").read_text(encoding="utf-8")),
    ):
        missing = yaml_paths(yaml.safe_load(text)) - keys
        assert not missing, f"{origin} uses keys the reference does not document: {sorted(missing)}"


def test_every_model_field_is_a_key_path_with_a_meaning() -> None:
    entries = reference.config_entries()
    leaves = {entry.key.rsplit(".", 1)[-1].removesuffix("[]") for entry in entries}

    def fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
        found = set(model.model_fields)
        for field in model.model_fields.values():
            for nested in _models_in(field.annotation):
                if nested not in seen:
                    seen.add(nested)
                    found |= fields(nested, seen)
        return found

    assert fields(HandoffConfig, set()) <= leaves
    assert reference.undocumented() == [], (
        f"add a meaning to services/reference.py CONFIG_MEANINGS for {reference.undocumented()}"
    )
    assert reference.stale_meanings() == [], "CONFIG_MEANINGS names keys the model no longer has"


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_a_field_without_a_meaning_is_reported() -> None:
    class Inner(BaseModel):
        documented: int = Field(default=1, description="has one")
        bare: str = "x"

    class Outer(BaseModel):
        items: list[Inner] = Field(default_factory=list)

    meanings = {"items": "the items"}
    assert reference.undocumented(Outer, meanings) == ["items[].bare"]
    assert reference.stale_meanings(Outer, {"items": "x", "gone": "y"}) == ["gone"]
    rows = {entry.key: entry for entry in reference.config_entries(Outer, meanings)}
    assert rows["items[].documented"].meaning == "has one"
    assert rows["items[].documented"].default == "`1`"
    assert rows["items"].type == "list of mappings"


def test_types_and_defaults_are_rendered_for_people() -> None:
    rows = {entry.key: entry for entry in reference.config_entries()}
    assert rows["sla.first_touch"].type == "duration"
    assert rows["sla.first_touch"].default == "`4h`"
    assert rows["scoring.engagement[].when"].type == "matcher"
    assert rows["qualification.disqualify"].type == "list of matchers"
    assert rows["sources[].id"].default == "required"
    assert rows["crm"].default == "not set"
    assert rows["teams.<name>.strategy"].type.startswith("one of `round_robin`")
    assert rows["reps[].hours"].default == "`00:00-24:00`"
    assert rows["reps[].capacity"].type == "integer, ≥ 0"


def test_cells_never_break_the_table() -> None:
    for line in reference.render_reference().splitlines():
        if line.startswith("| `"):
            assert len(re.findall(r"(?<!\\)\|", line)) == 5, line


def test_the_readme_holds_the_current_reference() -> None:
    text = README.read_text(encoding="utf-8")
    assert reference.section(text) == reference.render_reference().strip(), (
        "deploy/README.md's configuration reference is stale; run "
        "`python -m services.reference --update deploy/README.md`"
    )


def test_splice_replaces_only_the_marked_section(tmp_path: Path) -> None:
    document = f"before\n{reference.START_MARKER}\nold\n{reference.END_MARKER}\nafter\n"
    spliced = reference.splice(document, "new table\n")
    assert spliced == f"before\n{reference.START_MARKER}\nnew table\n{reference.END_MARKER}\nafter\n"
    assert reference.section(spliced) == "new table"
    with pytest.raises(ValueError, match="markers"):
        reference.splice("no markers here", "x")
    target = tmp_path / "README.md"
    target.write_text(document, encoding="utf-8")
    assert reference.main(["--update", str(target)]) == 0
    assert reference.section(target.read_text(encoding="utf-8")) == reference.render_reference().strip()
