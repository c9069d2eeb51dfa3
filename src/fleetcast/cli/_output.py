"""How the CLI prints: Rich for people, plain JSON with ``--json`` for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class Output:
    """Carries the ``--json`` choice to every command."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def data(self, value: Any) -> None:
        """Print ``value`` as JSON (``--json``); commands print their human form otherwise."""
        sys.stdout.write(json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=title, show_lines=False)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        console.print(table)

    def fields(self, title: str, pairs: Sequence[tuple[str, Any]]) -> None:
        table = Table(title=title, show_header=False, box=None)
        table.add_column(style="bold")
        table.add_column()
        for key, value in pairs:
            table.add_row(key, "" if value is None else str(value))
        console.print(table)

    def message(self, text: str) -> None:
        if self.as_json:
            return
        console.print(text)
