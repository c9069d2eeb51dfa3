"""``fleetcast devices``: list, inspect, admit and tag devices."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fleetcast.cli._context import change_status, state
from fleetcast.exceptions import UsageError

app = typer.Typer(help="List, inspect, accept, reject and tag devices.", no_args_is_help=True)


def _installed(device: dict[str, Any]) -> str:
    name, version = device.get("artifact_name"), device.get("artifact_version")
    return f"{name} {version}" if name else "-"


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="pending, accepted, preauthorized, rejected, decommissioned.")
    ] = None,
    device_type: Annotated[str | None, typer.Option("--device-type", "-t")] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 100,
) -> None:
    """List devices, newest first."""
    st = state(ctx)
    with st.client() as client:
        page = client.get("/devices", status=status, device_type=device_type, tag=tag, limit=limit)
    if st.output.as_json:
        st.output.data(page)
        return
    st.output.table(
        f"devices ({page['total']})",
        ["id", "status", "type", "identity", "installed", "tags", "last seen"],
        [
            (
                d["id"],
                d["status"],
                d["device_type"],
                ", ".join(f"{k}={v}" for k, v in d.get("identity", {}).items()),
                _installed(d),
                ", ".join(d.get("tags", [])),
                d.get("last_seen_at") or "never",
            )
            for d in page["items"]
        ],
    )


@app.command("show")
def show(ctx: typer.Context, device_id: str) -> None:
    """Show one device with its attributes and update history."""
    st = state(ctx)
    with st.client() as client:
        device = client.get(f"/devices/{device_id}")
        history = client.get(f"/devices/{device_id}/history")["items"]
    if st.output.as_json:
        st.output.data({"device": device, "history": history})
        return
    st.output.fields(
        f"device {device['id']}",
        [
            ("status", device["status"]),
            ("device type", device["device_type"]),
            ("identity", ", ".join(f"{k}={v}" for k, v in device.get("identity", {}).items())),
            ("installed", _installed(device)),
            ("tags", ", ".join(device.get("tags", [])) or "-"),
            ("last seen", device.get("last_seen_at") or "never"),
            *sorted((f"attr {k}", v) for k, v in device.get("attributes", {}).items()),
        ],
    )
    st.output.table(
        "history",
        ["time", "deployment", "state", "message"],
        [
            (e.get("at"), e.get("deployment_id") or "-", e.get("state"), e.get("message", ""))
            for e in history
        ],
    )


@app.command("accept")
def accept(ctx: typer.Context, device_id: str) -> None:
    """Accept a pending device: it may authenticate and receive updates."""
    change_status(ctx, "device", device_id, "accept")


@app.command("reject")
def reject(ctx: typer.Context, device_id: str) -> None:
    """Reject a device: it gets nothing from the server."""
    change_status(ctx, "device", device_id, "reject")


@app.command("decommission")
def decommission(ctx: typer.Context, device_id: str) -> None:
    """Decommission a device: its tokens stop working and it gets nothing more."""
    change_status(ctx, "device", device_id, "decommission")


@app.command("tag")
def tag(
    ctx: typer.Context,
    device_id: str,
    tags: Annotated[
        list[str], typer.Argument(help="The device's new tags (replaces the old ones).")
    ],
) -> None:
    """Set a device's tags (deployments can target tags)."""
    st = state(ctx)
    with st.client() as client:
        device = client.put(f"/devices/{device_id}/tags", {"tags": tags})
    if st.output.as_json:
        st.output.data(device)
    else:
        st.output.message(f"device {device_id} tags: {', '.join(device.get('tags', [])) or '-'}")


@app.command("set-key")
def set_key(
    ctx: typer.Context,
    device_id: str,
    public_key: Annotated[
        Path, typer.Option("--public-key", help="The device's new Ed25519 public key (PEM file).")
    ],
) -> None:
    """Replace a device's identity key: only the new key signs in from now on."""
    try:
        pem = public_key.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {public_key}: {e}") from e
    st = state(ctx)
    with st.client() as client:
        device = client.put(f"/devices/{device_id}/public-key", {"public_key": pem})
    if st.output.as_json:
        st.output.data(device)
    else:
        st.output.message(f"device {device_id} now signs in with key {device['public_key_id']}")
