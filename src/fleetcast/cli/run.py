"""``fleetcast server`` and ``fleetcast agent``: run the two long-lived processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import pydantic
import typer

from fleetcast.cli._output import console
from fleetcast.exceptions import UsageError


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
    workers: Annotated[
        int,
        typer.Option(
            min=1, help="Server processes (uvicorn workers); more than one wants PostgreSQL."
        ),
    ] = 1,
    public_url: Annotated[
        str | None,
        typer.Option(help="URL devices reach this server at (put in front of download links)."),
    ] = None,
    blob_store: Annotated[
        str,
        typer.Option(
            help="'local' (files under --data-dir) or s3://bucket\\[/prefix]; S3 credentials "
            "from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY."
        ),
    ] = "local",
    s3_endpoint_url: Annotated[
        str | None,
        typer.Option(help="S3-compatible endpoint, e.g. http://minio:9000 (default: AWS)."),
    ] = None,
    accel_redirect_prefix: Annotated[
        str | None,
        typer.Option(
            help="Behind nginx: answer downloads with X-Accel-Redirect to this internal "
            "location, which aliases the blob directory."
        ),
    ] = None,
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            help="mqtt://[user:password@]host[:port]: push 'check in now' to devices' topics."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this certificate (PEM, with its chain)."),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="The private key of --tls-cert (PEM).")
    ] = None,
    dev_tls: Annotated[
        bool,
        typer.Option(
            help="Serve HTTPS with a self-signed CA and certificate created once in "
            "--data-dir/tls (for trying it out; agents pin its ca.pem with ca_bundle)."
        ),
    ] = False,
) -> None:
    """Run the update server (zero-config: SQLite and a blob directory under --data-dir).

    Every FLEETCAST_* environment variable is read too (e.g.
    FLEETCAST_S3_REGION, FLEETCAST_PRESIGN_EXPIRY); options win over them.
    """
    import uvicorn

    from fleetcast.server import Settings, create_app, prepare
    from fleetcast.server.app import SETTINGS_ENV

    given: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "trusted_keys": trusted_key,
        "workers": workers,
        "public_url": public_url,
        "blob_store": blob_store,
        "s3_endpoint_url": s3_endpoint_url,
        "accel_redirect_prefix": accel_redirect_prefix,
        "mqtt_url": mqtt_url,
    }
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None and v != []})
    except pydantic.ValidationError as e:
        raise UsageError(f"invalid server option: {e}") from e
    if (tls_cert is None) != (tls_key is None):
        raise UsageError("give both --tls-cert and --tls-key, or neither")
    if dev_tls:
        if tls_cert is not None:
            raise UsageError("give --dev-tls or --tls-cert/--tls-key, not both")
        from fleetcast.server.devtls import ensure_dev_tls

        files = ensure_dev_tls(data_dir / "tls", host)
        tls_cert, tls_key = files.server_cert, files.server_key
        console.print(
            f"Development TLS (self-signed): agents set ca_bundle = {files.ca_cert.resolve()}"
        )
    tls: dict[str, Any] = (
        {"ssl_certfile": str(tls_cert), "ssl_keyfile": str(tls_key)} if tls_cert else {}
    )
    token = prepare(settings)
    url = f"{'https' if tls_cert else 'http'}://{host}:{port}"
    console.print(
        f"Fleetcast server on {url}  (data: {data_dir.resolve()}, workers: {settings.workers})"
    )
    console.print(f"API docs: {url}/docs   OpenAPI: {url}/openapi.json")
    if token:
        console.print(
            "\n[bold]First start: an admin API token was created. It is shown only once.[/bold]"
        )
        console.print(f"  export FLEETCAST_URL={url}")
        console.print(f"  export FLEETCAST_TOKEN={token}")
        console.print("  fleetcast devices list\n")
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level="info", **tls)
        return
    # Worker processes import the app by name and read the settings back from the environment.
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    uvicorn.run(
        "fleetcast.server.app:create_app_from_environment",
        factory=True,
        workers=settings.workers,
        host=host,
        port=port,
        log_level="info",
        **tls,
    )


def agent(
    config: Annotated[Path, typer.Option("--config", "-c", help="The agent's TOML configuration.")],
) -> None:
    """Run the device agent: poll, download, verify, install, reboot, commit or roll back."""
    from fleetcast.agent import AgentConfig, run_agent

    run_agent(AgentConfig.load(config))
