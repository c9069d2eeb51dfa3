"""The agent's own process never loads the TUF client: it runs in a child process.

``tuf.ngclient`` with securesystemslib and urllib3 costs about 12 MB of resident
memory; the idle agent must stay under 40 MB (issue 8). Only the child
(``python -m fleetcast.agent.trust``) and the conformance CLI import them.
"""

from __future__ import annotations

import json
import subprocess
import sys

TUF_STACK = ("tuf", "securesystemslib", "urllib3")


def _loaded(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def _tuf_modules(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded for bad in TUF_STACK if m == bad or m.startswith(bad + "."))


def test_the_agent_process_imports_no_tuf() -> None:
    """The runner, the main module and every light module of the trust package (what the
    runner imports when it checks an offer) leave tuf, securesystemslib and urllib3 out."""
    loaded = _loaded(
        "import fleetcast.agent.__main__, fleetcast.agent.runner\n"
        "import fleetcast.agent.trust, fleetcast.agent.trust.check\n"
        "import fleetcast.agent.trust.artifact, fleetcast.agent.trust.installed\n"
        "import fleetcast.agent.trust.report, fleetcast.agent.trust.protocol"
    )
    assert "fleetcast.agent.runner" in loaded
    assert _tuf_modules(loaded) == []


def test_the_child_process_does_import_tuf() -> None:
    """The control: the child's entry module really is where tuf lives (so the test above
    would notice if the runner imported it)."""
    assert "tuf.ngclient" in _tuf_modules(_loaded("import fleetcast.agent.trust.__main__"))
