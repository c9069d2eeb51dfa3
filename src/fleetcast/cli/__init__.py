"""The ``fleetcast`` command line: one entry point for operators, devices and the demo.

Every Fleetcast error ends the command with a one-line message on stderr and
a non-zero exit status (1 for refused or invalid input, 2 for usage errors,
3 when the server cannot be reached).
"""

from __future__ import annotations

from typing import Annotated

import typer

from fleetcast.cli import artifact, audit, demo, deploy, devices, keys, run, sim, tuf
from fleetcast.cli._context import CliState
from fleetcast.cli._output import Output, err_console
from fleetcast.exceptions import ApiError, FleetcastError, TransportError, UsageError

app = typer.Typer(
    name="fleetcast",
    help="Fleetcast: over-the-air updates for fleets of Linux devices.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    url: Annotated[str | None, typer.Option(help="Server URL (env FLEETCAST_URL).")] = None,
    token: Annotated[
        str | None, typer.Option(help="Admin API token (env FLEETCAST_TOKEN).")
    ] = None,
) -> None:
    ctx.obj = CliState(Output(json_output), url, token)


app.add_typer(keys.app, name="keys")
app.add_typer(artifact.app, name="artifact")
app.add_typer(devices.app, name="devices")
app.add_typer(deploy.app, name="deploy")
app.add_typer(audit.app, name="audit")
app.add_typer(tuf.app, name="tuf")
app.command("server")(run.server)
app.command("agent")(run.agent)
app.command("demo")(demo.demo)
app.command("sim")(sim.sim)


def main() -> None:
    """Console-script entry point: run the app and turn our errors into exit codes.

    Usage errors from the command-line parser itself are reported by Typer
    (exit status 2); Fleetcast's own errors are caught here.
    """
    try:
        app()
    except FleetcastError as e:
        err_console.print(f"[red]error:[/red] {e}", highlight=False)
        if isinstance(e, UsageError):
            raise SystemExit(2) from None
        if isinstance(e, TransportError):
            raise SystemExit(3) from None
        if isinstance(e, ApiError):
            err_console.print(f"  (server said {e.status_code} {e.code})", highlight=False)
        raise SystemExit(1) from None


__all__ = ["app", "main"]
