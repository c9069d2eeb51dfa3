"""``fleetcast server`` and ``fleetcast agent``: run the two long-lived processes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fleetcast.cli._output import console


def server(
    data_dir: Annotated[Path, typer.Option(help="Database, blobs and secrets live here.")] = Path(
        "fleetcast-data"
    ),
    database_url: Annotated[
        str | None,
        typer.Option(
            help="e.g. postgresql+asyncpg://user@host/db (default: SQLite in --data-dir)."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    trusted_key: Annotated[
        list[Path], typer.Option(help="Vendor public key; uploads must be signed by one (repeat).")
    ] = [],  # noqa: B006
) -> None:
    """Run the update server (zero-config: SQLite and a blob directory under --data-dir)."""
    import uvicorn

    from fleetcast.server import Settings, create_app, prepare

    settings = Settings(data_dir=data_dir, database_url=database_url, trusted_keys=trusted_key)
    token = prepare(settings)
    url = f"http://{host}:{port}"
    console.print(f"Fleetcast server on {url}  (data: {data_dir.resolve()})")
    console.print(f"API docs: {url}/docs   OpenAPI: {url}/openapi.json")
    if token:
        console.print(
            "\n[bold]First start: an admin API token was created. It is shown only once.[/bold]"
        )
        console.print(f"  export FLEETCAST_URL={url}")
        console.print(f"  export FLEETCAST_TOKEN={token}")
        console.print("  fleetcast devices list\n")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


def agent(
    config: Annotated[Path, typer.Option("--config", "-c", help="The agent's TOML configuration.")],
) -> None:
    """Run the device agent: poll, download, verify, install, reboot, commit or roll back."""
    from fleetcast.agent import AgentConfig, run_agent

    run_agent(AgentConfig.load(config))
