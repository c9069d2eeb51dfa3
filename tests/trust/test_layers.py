"""The offline tooling is usable on an air-gapped machine without the server stack."""

from __future__ import annotations

import json
import subprocess
import sys


def test_offline_tooling_imports_nothing_of_the_server_agent_or_cli() -> None:
    code = (
        "import json, sys, fleetcast.trust.operations, fleetcast.trust.rotation; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    forbidden = ("fleetcast.server", "fleetcast.agent", "fleetcast.cli", "fastapi", "sqlalchemy",
                 "typer", "httpx")  # fmt: skip
    assert [m for m in loaded for bad in forbidden if m == bad or m.startswith(bad + ".")] == []
