"""docs/cli.md is the CLI's own --help output, so the reference cannot drift."""

from __future__ import annotations

from pathlib import Path

from fleetcast.cli import app
from fleetcast.cli._reference import render

DOC = Path(__file__).parents[2] / "docs" / "cli.md"


def test_cli_reference_is_up_to_date() -> None:
    assert DOC.read_text() == render(app), "docs/cli.md is stale: run `make docs`"


def test_reference_covers_every_operator_command() -> None:
    text = render(app)
    for command in (
        "keys generate",
        "artifact build",
        "artifact inspect",
        "artifact verify",
        "artifact upload",
        "artifact list",
        "devices list",
        "devices show",
        "devices accept",
        "devices reject",
        "devices tag",
        "deploy create",
        "deploy status",
        "deploy pause",
        "deploy resume",
        "deploy abort",
        "server",
        "agent",
        "demo",
    ):
        assert f"## `fleetcast {command}`" in text
