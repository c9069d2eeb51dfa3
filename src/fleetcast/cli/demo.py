"""``fleetcast demo``: a whole phased rollout on this machine, from the same parts as production.

What happens:

1. a real server starts in a temporary data directory (SQLite + blob dir);
2. a vendor key pair is generated, artifacts v1.0.0 and v1.1.0 are built,
   signed and uploaded;
3. the operator's offline TUF keys are created (``fleetcast keys init``) and
   v1.1.0 is released (``fleetcast artifact release``): the devices will
   install only what both the image repository and their director agree on
   (ADR 0008);
4. 20 simulated devices start (real agents over HTTP on loopback, shipped
   with the two TUF root files), register, and are accepted by the "operator";
5. v1.1.0 is rolled out in phases: 10% canary, 50%, 100%. One canary device
   fails its health check after the reboot and rolls back by itself;
6. a summary table shows every device's old version, new version and outcome.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fleetcast.cli._api import ManagementClient
from fleetcast.cli._output import console
from fleetcast.exceptions import FleetcastError

DEVICE_TYPE = "acme-gw"
ARTIFACT = "acme-fw"


def demo_phases(devices: int) -> list[dict[str, int]]:
    """10% canary, 50%, 100%. The demo injects exactly one failure into the canary
    phase, so that phase tolerates one failed device and no more."""
    canaries = max(1, math.ceil(devices * 10 / 100))
    return [
        {"percent": 10, "soak_seconds": 2, "max_failure_percent": math.ceil(100 / canaries)},
        {"percent": 50, "soak_seconds": 2, "max_failure_percent": 20},
        {"percent": 100, "soak_seconds": 0, "max_failure_percent": 20},
    ]


TERMINAL = {"success", "failure", "already-installed", "aborted", "skipped"}


def _image(version: str, size: int) -> bytes:
    """A stand-in root filesystem: a header naming the version, then filler."""
    header = f"ACME-GATEWAY-ROOTFS {version}\n".encode()
    body = bytearray()
    seed = version.encode()
    while len(body) < size:
        body += seed + len(body).to_bytes(8, "big") * 8
    return (header + bytes(body))[:size]


def _wait_for(what: str, predicate: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise FleetcastError(f"demo: timed out waiting for {what}")


def _operator(url: str, token: str, *args: str) -> None:
    """Run ``fleetcast ARGS`` as the operator would, against the demo's server."""
    console.print(f"$ fleetcast {' '.join(args)}")
    env = {**os.environ, "FLEETCAST_URL": url, "FLEETCAST_TOKEN": token}
    done = subprocess.run(
        [sys.executable, "-m", "fleetcast", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in done.stdout.splitlines():
        console.print(f"  {line}", highlight=False)
    if done.returncode != 0:
        raise FleetcastError(f"demo: `fleetcast {args[0]} {args[1]}` failed: {done.stderr.strip()}")


def demo(
    devices: Annotated[int, typer.Option(help="How many simulated devices.")] = 20,
    keep_running: Annotated[
        bool,
        typer.Option(help="Leave the server and devices running; print the URL and admin token."),
    ] = False,
    image_size: Annotated[
        int, typer.Option(help="Size of the simulated rootfs image in bytes.")
    ] = 2 * 1024 * 1024,
) -> None:
    """Run a complete phased rollout to simulated devices on this machine."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fleetcast.agent.config import TrustConfig
    from fleetcast.artifact import PayloadSource, build_artifact
    from fleetcast.core.signing import private_key_to_pem, public_key_to_pem
    from fleetcast.server import Settings
    from fleetcast.sim import ServerThread, SimulatedFleet

    workdir = Path(tempfile.mkdtemp(prefix="fleetcast-demo-"))
    console.rule("[bold]Fleetcast demo")
    console.print(f"working directory: {workdir}")

    # 1. A real server, zero-config.
    server = ServerThread(Settings(data_dir=workdir / "server")).start()
    token = server.admin_token
    assert token is not None
    console.print(f"server: {server.url}  (SQLite + blobs in {workdir / 'server'})")

    # 2. Vendor key and signed artifacts.
    key = Ed25519PrivateKey.generate()
    keys_dir = workdir / "keys"
    keys_dir.mkdir()
    (keys_dir / "vendor.key").write_bytes(private_key_to_pem(key))
    (keys_dir / "vendor.key").chmod(0o600)
    public_key = keys_dir / "vendor.pub"
    public_key.write_text(public_key_to_pem(key.public_key()))
    images = {v: _image(v, image_size) for v in ("1.0.0", "1.1.0")}
    client = ManagementClient(server.url, token)
    artifacts: dict[str, dict[str, Any]] = {}
    for version, image in images.items():
        payload = workdir / f"rootfs-{version}.img"
        payload.write_bytes(image)
        path = workdir / f"{ARTIFACT}-{version}.fca"
        build_artifact(
            path,
            name=ARTIFACT,
            version=version,
            compatible=[DEVICE_TYPE],
            payloads=[PayloadSource("rootfs", "rootfs-image", payload, {})],
            key=key,
        )
        artifacts[version] = client.upload_artifact(path)
        console.print(
            f"built, signed and uploaded {ARTIFACT} {version} ({path.stat().st_size} bytes)"
        )

    # 3. The operator's offline TUF keys; releasing v1.1.0 signs its target entry.
    tuf_dir = keys_dir / "tuf"
    _operator(server.url, token, "keys", "init", "--dir", str(tuf_dir), "--bin-bits", "4")
    _operator(
        server.url, token, "artifact", "release",
        str(workdir / f"{ARTIFACT}-1.1.0.fca"), "--keys", str(tuf_dir),
    )  # fmt: skip
    trust = TrustConfig(
        image_root=tuf_dir / "image" / "1.root.json",
        director_root=tuf_dir / "director" / "1.root.json",
    )

    # 4. The fleet: real agents on simulated hardware, all on v1.0.0.
    fleet = SimulatedFleet(workdir / "devices", server.url, [public_key], trust=trust)
    fleet.add(
        devices,
        device_type=DEVICE_TYPE,
        image=images["1.0.0"],
        artifact_name=ARTIFACT,
        artifact_version="1.0.0",
    )
    fleet.start()
    try:
        _run_rollout(client, fleet, artifacts, devices)
    finally:
        if not keep_running:
            fleet.stop()
            server.stop()
            client.close()
            shutil.rmtree(workdir, ignore_errors=True)
    if keep_running:
        console.print(f"\nServer running at {server.url}")
        console.print(f"  export FLEETCAST_URL={server.url}")
        console.print(f"  export FLEETCAST_TOKEN={token}")
        console.print("Press Ctrl-C to stop.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            fleet.stop()
            server.stop()


def _run_rollout(
    client: ManagementClient, fleet: Any, artifacts: dict[str, dict[str, Any]], count: int
) -> None:
    def pending() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = client.get("/devices", status="pending", limit=1000)["items"]
        return items if len(items) >= count else None

    with console.status(f"waiting for {count} devices to register..."):
        for device in _wait_for("devices to register", pending, 60):
            client.post(f"/devices/{device['id']}/accept")
    console.print(f"operator accepted {count} pending devices")

    def on_v1() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = client.get("/devices", status="accepted", limit=1000)["items"]
        ready = [d for d in items if d.get("artifact_version") == "1.0.0"]
        return items if len(ready) >= count else None

    with console.status("waiting for the devices' inventory..."):
        before = {d["id"]: d for d in _wait_for("inventory", on_v1, 60)}

    phases = demo_phases(count)
    deployment = client.post(
        "/deployments",
        {
            "name": f"{ARTIFACT} 1.1.0",
            "artifact_id": artifacts["1.1.0"]["id"],
            "target": {"device_types": [DEVICE_TYPE]},
            "phases": phases,
        },
    )
    dep_id = deployment["id"]
    members = client.get(f"/deployments/{dep_id}/devices")["items"]
    canaries = sorted(m["device_id"] for m in members if m["phase"] == 0)
    faulty_id = canaries[0]
    serial = before[faulty_id]["identity"]["serial"]
    (fleet.root / serial / "faulty").touch()
    console.print(
        f"deployment {dep_id}: phases 10% / 50% / 100%; canary {serial} will fail its health check"
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[states]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = [
            progress.add_task(f"phase {i + 1} ({p['percent']}%)", total=None, states="waiting")
            for i, p in enumerate(phases)
        ]
        deadline = time.monotonic() + 300
        while True:
            status = client.get(f"/deployments/{dep_id}")
            for task, phase in zip(tasks, status["phases"], strict=True):
                counts: dict[str, int] = phase.get("counts", {})
                done = sum(v for k, v in counts.items() if k in TERMINAL)
                states = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if v)
                progress.update(
                    task,
                    total=phase.get("devices", sum(counts.values())),
                    completed=done,
                    states=states,
                )
            if status["status"] in ("completed", "aborted", "paused"):
                break
            if time.monotonic() > deadline:
                raise FleetcastError("demo: the rollout did not finish in 300 s")
            time.sleep(0.3)
    if status["status"] != "completed":
        raise FleetcastError(
            f"demo: deployment ended {status['status']}: {status.get('pause_reason') or ''}"
        )

    after = {d["id"]: d for d in client.get("/devices", limit=1000)["items"]}
    outcome = {m["device_id"]: m for m in client.get(f"/deployments/{dep_id}/devices")["items"]}
    table = Table(title="rollout summary")
    for column in ("device", "phase", "old version", "new version", "outcome"):
        table.add_column(column)
    for device_id, device in sorted(before.items(), key=lambda kv: kv[1]["identity"]["serial"]):
        member = outcome[device_id]
        state = member["state"]
        text = "rolled back" if member.get("rolled_back") else state
        style = "green" if state == "success" else "red"
        table.add_row(
            device["identity"]["serial"],
            str(member["phase"] + 1),
            device.get("artifact_version") or "-",
            after[device_id].get("artifact_version") or "-",
            f"[{style}]{text}[/{style}]",
        )
    console.print(table)
    succeeded = sum(1 for m in outcome.values() if m["state"] == "success")
    console.print(
        f"{succeeded} of {count} devices updated to 1.1.0; "
        f"{count - succeeded} rolled back to 1.0.0 and kept running."
    )
