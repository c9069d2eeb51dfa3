"""``fleetcast audit``: read the audit log of management actions."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fleetcast.cli._context import state

app = typer.Typer(help="Read the audit log: who changed what, when.", no_args_is_help=True)


@app.command("list")
def list_(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(help="An API token's id or name.")] = None,
    action: Annotated[
        str | None,
        typer.Option(help="An action (devices.accept), or a resource and a dot (devices.)."),
    ] = None,
    before: Annotated[int | None, typer.Option(help="Only events older than this id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
) -> None:
    """List management actions, newest first."""
    st = state(ctx)
    with st.client() as client:
        page = client.get("/audit", actor=actor, action=action, before=before, limit=limit)
    if st.output.as_json:
        st.output.data(page)
        return
    st.output.table(
        "audit log",
        ["id", "when", "who", "action", "target", "outcome", "details"],
        [
            (
                e["id"],
                e["at"],
                e["actor_name"],
                e["action"],
                e.get("target_id") or "-",
                e["outcome"],
                json.dumps(e.get("details") or {}, separators=(",", ":"))[:80],
            )
            for e in page["items"]
        ],
    )
    if page.get("next_before") is not None:
        st.output.message(f"older events: --before {page['next_before']}")
