from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from fleetcast.cli import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


CliRunner = Callable[..., CliResult]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """Run ``fleetcast ARGS`` in process, as a user would, and capture what it prints."""

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["fleetcast", *args])
        monkeypatch.setenv("COLUMNS", "200")
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
