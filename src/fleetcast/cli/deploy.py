"""``fleetcast deploy``: create phased deployments and steer them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fleetcast.cli._api import ManagementClient
from fleetcast.cli._context import change_status, state
from fleetcast.exceptions import UsageError

app = typer.Typer(help="Create, watch, pause, resume and abort deployments.", no_args_is_help=True)

PHASE_HELP = (
    "A phase: PERCENT%[:SOAK_SECONDS[:MAX_FAIL_PERCENT]] or COUNT[:SOAK[:MAX_FAIL]], cumulative. "
    "Repeat for each phase; the last must reach 100%. Default: one phase at 100% (all at once)."
)


def parse_phase(text: str) -> dict[str, int]:
    """Parse ``10%:60:50`` (percent, soak seconds, max failure percent) or ``2:0:0`` (count).

    Raises:
        UsageError: the text does not match.
    """
    parts = text.split(":")
    if not 1 <= len(parts) <= 3:
        raise UsageError(f"bad --phase {text!r}: {PHASE_HELP}")
    share, *rest = parts
    phase: dict[str, int] = {}
    try:
        if share.endswith("%"):
            phase["percent"] = int(share[:-1])
        else:
            phase["count"] = int(share)
        if rest:
            phase["soak_seconds"] = int(rest[0])
        if len(rest) > 1:
            phase["max_failure_percent"] = int(rest[1].rstrip("%"))
    except ValueError as e:
        raise UsageError(f"bad --phase {text!r}: {PHASE_HELP}") from e
    return phase


def resolve_artifact(client: ManagementClient, ref: str) -> str:
    """Accept an artifact id or NAME@VERSION.

    Raises:
        UsageError: no artifact has that name and version.
    """
    if "@" not in ref:
        return ref
    name, _, version = ref.partition("@")
    for artifact in client.get("/artifacts")["items"]:
        if artifact["name"] == name and artifact["version"] == version:
            return str(artifact["id"])
    raise UsageError(f"no artifact {name} {version} on the server (see `fleetcast artifact list`)")


@app.command("create")
def create(
    ctx: typer.Context,
    artifact: Annotated[str, typer.Option(help="Artifact id or NAME@VERSION.")],
    tag: Annotated[list[str], typer.Option(help="Target devices with this tag (repeat).")] = [],  # noqa: B006
    device_type: Annotated[
        list[str], typer.Option("--device-type", "-t", help="Target this device type (repeat).")
    ] = [],  # noqa: B006
    device: Annotated[list[str], typer.Option(help="Target this device id (repeat).")] = [],  # noqa: B006
    phase: Annotated[list[str], typer.Option(help=PHASE_HELP)] = [],  # noqa: B006
    name: Annotated[str | None, typer.Option(help="A name for the deployment.")] = None,
    allow_downgrade: Annotated[
        bool, typer.Option(help="Allow installing an older version.")
    ] = False,
) -> None:
    """Create a deployment: matching accepted devices get the artifact, phase by phase."""
    st = state(ctx)
    if not (tag or device_type or device):
        raise UsageError("give a target: --tag, --device-type or --device")
    with st.client() as client:
        artifact_id = resolve_artifact(client, artifact)
        body: dict[str, Any] = {
            "name": name or artifact,
            "artifact_id": artifact_id,
            "target": {"tags": tag, "device_types": device_type, "device_ids": device},
            "allow_downgrade": allow_downgrade,
        }
        if phase:
            body["phases"] = [parse_phase(p) for p in phase]
        deployment = client.post("/deployments", body)
    if st.output.as_json:
        st.output.data(deployment)
    else:
        st.output.message(
            f"deployment {deployment['id']} created: {deployment.get('total', '?')} devices"
        )


def print_status(st_output: Any, deployment: dict[str, Any]) -> None:
    st_output.fields(
        f"deployment {deployment['id']}",
        [
            ("name", deployment.get("name")),
            ("artifact", deployment.get("artifact_id")),
            ("status", deployment.get("status")),
            ("pause reason", deployment.get("pause_reason") or "-"),
            ("current phase", deployment.get("current_phase")),
            ("bytes shipped", _shipped(deployment)),
        ],
    )
    rows = []
    for index, phase in enumerate(deployment.get("phases", [])):
        counts = phase.get("counts", {})
        rows.append(
            (
                index + 1,
                f"{phase['percent']}%" if phase.get("percent") is not None else phase.get("count"),
                phase.get("devices", sum(counts.values())),
                ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v),
                phase.get("soak_seconds", 0),
                phase.get("max_failure_percent"),
            )
        )
    st_output.table("phases", ["#", "share", "devices", "states", "soak s", "max fail %"], rows)


def _shipped(deployment: dict[str, Any]) -> str:
    """``bytes_shipped`` of ``bytes_full`` (full images), with the share saved by deltas."""
    shipped = int(deployment.get("bytes_shipped") or 0)
    full = int(deployment.get("bytes_full") or 0)
    if not full:
        return f"{shipped} B"
    return f"{shipped} B of {full} B for full images ({100 * shipped / full:.1f}%)"


@app.command("status")
def status(ctx: typer.Context, deployment_id: str) -> None:
    """Show a deployment's status and per-phase progress."""
    st = state(ctx)
    with st.client() as client:
        deployment = client.get(f"/deployments/{deployment_id}")
    if st.output.as_json:
        st.output.data(deployment)
    else:
        print_status(st.output, deployment)


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List deployments."""
    st = state(ctx)
    with st.client() as client:
        items = client.get("/deployments")["items"]
    if st.output.as_json:
        st.output.data(items)
        return
    st.output.table(
        "deployments",
        ["id", "name", "status", "phase", "created"],
        [
            (d["id"], d.get("name"), d.get("status"), d.get("current_phase"), d.get("created_at"))
            for d in items
        ],
    )


@app.command("pause")
def pause(ctx: typer.Context, deployment_id: str) -> None:
    """Pause: no new device starts; devices already updating finish."""
    change_status(ctx, "deployment", deployment_id, "pause")


@app.command("resume")
def resume(ctx: typer.Context, deployment_id: str) -> None:
    """Resume a paused deployment."""
    change_status(ctx, "deployment", deployment_id, "resume")


@app.command("abort")
def abort(ctx: typer.Context, deployment_id: str) -> None:
    """Abort: devices that have not started never will."""
    change_status(ctx, "deployment", deployment_id, "abort")
