"""Render the CLI reference (docs/cli.md) from the commands' own ``--help``.

The reference is generated, never written by hand, and a test fails when it
is out of date, so the docs cannot drift from the code. Regenerate with
``make docs``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from typer.main import get_command
from typer.testing import CliRunner

_ENV = {"COLUMNS": "100", "TERM": "dumb", "NO_COLOR": "1"}


def _commands(command: object, prefix: list[str]) -> list[list[str]]:
    # Typer vendors its own click, so groups are recognised by their commands.
    paths = [prefix]
    children: dict[str, object] = getattr(command, "commands", {})
    for name in sorted(children):
        paths.extend(_commands(children[name], [*prefix, name]))
    return paths


def render(app: typer.Typer) -> str:
    """Return the Markdown CLI reference for ``app``."""
    runner = CliRunner()
    parts = [
        "# CLI reference\n",
        "Generated from `fleetcast ... --help` by `make docs`; do not edit by hand.\n",
    ]
    for path in _commands(get_command(app), []):
        result = runner.invoke(app, [*path, "--help"], env=_ENV, prog_name="fleetcast")
        text = "\n".join(line.rstrip() for line in result.output.strip("\n").splitlines())
        title = " ".join(["fleetcast", *path])
        parts.append(f"## `{title}`\n")
        parts.append(f"```text\n{text}\n```\n")
    return "\n".join(parts)


def main() -> None:
    """Write the reference to the path given on the command line."""
    from fleetcast.cli import app

    Path(sys.argv[1]).write_text(render(app))


if __name__ == "__main__":
    main()
