"""The layout's rules, checked on the source: services never import each other; no I/O at import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "scoring", "router", "notifier")


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", SERVICES)
def test_a_service_imports_no_other_service(package: str) -> None:
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        others = imported_packages(path) & (set(SERVICES) - {package})
        if others:
            offenders.append(f"{path.relative_to(ROOT)} imports {sorted(others)}")
    assert not offenders, "services share only services/: " + "; ".join(offenders)


def test_the_kernel_imports_services_only_in_the_composition_root() -> None:
    allowed = {"runtime.py", "cli.py", "bench"}
    offenders = []
    for path in sorted((ROOT / "services").rglob("*.py")):
        rel = path.relative_to(ROOT / "services")
        if rel.parts[0] in allowed or rel.name in allowed:
            continue
        others = imported_packages(path) & set(SERVICES)
        if others:
            offenders.append(f"services/{rel} imports {sorted(others)}")
    assert not offenders, "; ".join(offenders)


def test_no_engine_or_client_is_created_at_import_time() -> None:
    calls = ("create_async_engine", "AsyncClient", "AIOKafkaProducer", "AIOKafkaConsumer", "Database")
    offenders = []
    for package in ("services", *SERVICES):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in tree.body:  # module level only
                for call in ast.walk(node) if isinstance(node, ast.Assign | ast.Expr) else ():
                    if isinstance(call, ast.Call):
                        name = getattr(call.func, "id", None) or getattr(call.func, "attr", None)
                        if name in calls:
                            offenders.append(f"{path.relative_to(ROOT)}:{call.lineno} {name}()")
    assert not offenders, "created at import time: " + "; ".join(offenders)
