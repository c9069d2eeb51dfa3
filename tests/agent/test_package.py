"""The agent's public surface and its import boundary."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import fleetcast.agent


def test_all_is_exactly_the_public_names() -> None:
    public = {n for n in dir(fleetcast.agent) if not n.startswith("_")}
    # Submodules show up in dir() once anything imported them; they are not API.
    modules = {m.name for m in pkgutil.iter_modules(fleetcast.agent.__path__)} | {"annotations"}
    assert set(fleetcast.agent.__all__) == public - modules
    for name in (
        "Agent",
        "AgentConfig",
        "run_agent",
        "SimulatedDevice",
        "StepResult",
        "Bootloader",
        "SimulatedUBoot",
    ):
        assert name in fleetcast.agent.__all__


def test_agent_never_imports_the_server_stack() -> None:
    """Importing the agent pulls in none of the server's dependencies.

    (``rich`` is not checked: httpx imports it opportunistically for its own CLI
    when it happens to be installed; the agent works without it.)
    """
    code = (
        "import sys, fleetcast.agent, fleetcast.agent.runner;"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi','sqlalchemy','pydantic','uvicorn','starlette','alembic','typer','asyncpg'}"
        " or m.startswith(('fleetcast.server','fleetcast.cli','fleetcast.sim'))];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
