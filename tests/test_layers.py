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


IDLE_AGENT_MUST_NOT_LOAD = ("pyzstd", "tarfile", "fleetcast.artifact", "fleetcast.delta._engines")


def test_an_idle_agent_loads_no_update_machinery() -> None:
    """The agent's main module and one inventory stay clear of zstd, tar, the
    artifact reader and the delta engines: they load when an update starts, so
    an agent that only polls stays small (docs/agent.md, idle RSS target)."""
    code = (
        "import json, sys, fleetcast.agent.__main__, fleetcast.agent.runner\n"
        "from fleetcast.agent.inventory import make_inventory\n"
        "make_inventory(device_type='t', attributes={}, active_slot='a',\n"
        "               running=None, in_place={})\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(json.loads(out.stdout))
    heavy = sorted(
        m for m in loaded for bad in IDLE_AGENT_MUST_NOT_LOAD if m == bad or m.startswith(bad + ".")
    )
    assert heavy == [], f"an idle agent loads {heavy}"
