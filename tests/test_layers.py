"""The layers point inward: the agent never pulls in the server or its dependencies."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN_FOR_AGENT = (
    "fleetcast.server",
    "fleetcast.cli",
    "fleetcast.sim",
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "uvicorn",
    "pydantic",
    "typer",
)
# Not listed: rich. httpx's __init__ imports its optional CLI, which loads rich
# when it happens to be installed (it is, for our CLI); the agent never uses it.


def _modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize(
    "module",
    [
        "fleetcast.agent",
        "fleetcast.agent.delta",
        "fleetcast.core.wire",
        "fleetcast.artifact",
        "fleetcast.delta",
    ],
)
def test_device_side_imports_nothing_of_the_server(module: str) -> None:
    loaded = _modules_after_import(module)
    leaked = sorted(
        m for m in loaded for bad in FORBIDDEN_FOR_AGENT if m == bad or m.startswith(bad + ".")
    )
    assert leaked == [], f"{module} pulls in {leaked}"


def test_core_does_no_io_imports() -> None:
    loaded = _modules_after_import("fleetcast.core.manifest")
    assert "httpx" not in loaded
    assert not any(m.startswith("fleetcast.agent") for m in loaded)
