"""Benchmarks 2 and 4: a virtual fleet against a real server (PostgreSQL, MQTT).

    .venv/bin/python bench/fleet.py wakeup  [--devices 100000]   # benchmark 2
    .venv/bin/python bench/fleet.py rollout [--devices 100000]   # benchmark 4

``wakeup``: time from "deployment started" to every device having checked
in and received the offer, once with every device on MQTT push (short
polls once an hour otherwise) and once with every device long-polling.
Target: under 60 s. A long-polling device holds a connection, and this
machine allows 20,000 open files per process, so the long-poll run is
capped at ``--long-poll-devices`` (default 15,000) and says so.

``rollout``: a full phased rollout (1 %, 10 %, 50 %, 100 %, no soak) of a
64 KiB artifact to every device on MQTT push: wall time, the server's peak
memory (VmHWM; target under 1 GiB) and the database size.

A "device" here is a virtual device (``fleetcast.sim.virtual``): its own
key, token, ETag and installed version, and one coroutine, in one load
generator process. Devices do not own connections: they borrow one from a
keep-alive pool (raw asyncio HTTP/1.1, ``fleetcast.sim._http``) for each
request, 512 connections for push fleets, one per device plus 64 for
long-poll fleets (a waiting long-poll holds its connection). Every device's
MQTT notices arrive on one subscription. The bench raises its open-files
limit to the hard limit before it starts.

The fleet is pre-provisioned: device rows are bulk-inserted and their
tokens minted directly (100,000 ``/auth`` calls are setup, not what is
measured). Server and fleet share the machine's two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import (
    database,
    database_size,
    fleetcast_server,
    free_port,
    machine,
    peak_rss,
    provision,
    table,
    temp_work,
)
from tests.factories import make_artifact

from fleetcast.server import Settings
from fleetcast.sim.virtual import FleetMix, FleetStats, VirtualFleet

MQTT = "mqtt://127.0.0.1:1883"


def _artifact(work: Path, size: int) -> Path:
    import os

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    image = os.urandom(size)
    return make_artifact(
        work / "artifacts", Ed25519PrivateKey.generate(), version="1.1.0", image=image
    ).path


def run_fleet(
    work: Path,
    *,
    devices: int,
    push: bool,
    install: bool,
    phases: list[dict[str, int]],
    budget: float,
    artifact_size: int,
) -> dict[str, float]:
    with database("postgres", work) as url:
        topic = f"bench-{work.name}"
        settings = Settings(
            data_dir=work / "data",
            database_url=url,
            mqtt_url=MQTT if push else None,
            mqtt_topic_prefix=topic,
            max_long_poll=600,
            engine_interval=0.5,
            # Every virtual device signs in from loopback: no per-address limit.
            auth_client_burst=0,
        )
        from fleetcast.server import prepare

        admin_token = prepare(settings)
        started = time.monotonic()
        fleet_rows = provision(settings, devices, sampled=devices)
        print(f"  provisioned {devices:,} devices in {time.monotonic() - started:.0f} s")
        port = free_port()
        url_base = f"http://127.0.0.1:{port}"
        with fleetcast_server(settings, work, port) as server:
            admin = httpx.Client(base_url=f"{url_base}/api/v1", timeout=600)
            if admin_token is None:
                raise SystemExit("the bench database was not fresh")
            admin.headers["Authorization"] = f"Bearer {admin_token}"
            artifact = admin.post(
                "/artifacts", content=_artifact(work, artifact_size).read_bytes()
            ).json()
            fleet = VirtualFleet(
                url_base,
                count=devices,
                mix=FleetMix(push=1.0 if push else 0.0),
                tokens=fleet_rows.tokens,
                long_poll=600 if not push else 0,
                poll_interval=3600 if push else 0,
                mqtt_url=MQTT if push else None,
                mqtt_topic_prefix=topic,
                connections=512 if push else devices + 64,
                install=install,
            )
            result: dict[str, float] = {}

            async def scenario() -> FleetStats:
                runner = asyncio.create_task(
                    fleet.run(
                        duration=budget,
                        until=lambda s: (
                            len(s.offered_at if not install else s.finished_at) >= devices
                        ),
                    )
                )
                deadline = time.monotonic() + budget
                while fleet.stats.checkins < devices and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                result["warm-up s"] = time.monotonic() - started
                await asyncio.sleep(2.0)
                t0 = time.monotonic()
                created = await asyncio.to_thread(
                    admin.post,
                    "/deployments",
                    json={
                        "name": "bench",
                        "artifact_id": artifact["id"],
                        "target": {"device_types": ["acme-gw"]},
                        "phases": phases,
                    },
                )
                assert created.status_code == 201, created.text
                stats = await runner
                result["t0"] = t0
                if install:
                    deployment = created.json()["id"]
                    while time.monotonic() < deadline:
                        status = (
                            await asyncio.to_thread(admin.get, f"/deployments/{deployment}")
                        ).json()["status"]
                        if status == "completed":
                            break
                        await asyncio.sleep(0.5)
                    result["done"] = time.monotonic()
                return stats

            stats = asyncio.run(scenario())
            t0 = result["t0"]
            reached = (
                sorted(stats.offered_at.values())
                if not install
                else sorted(stats.finished_at.values())
            )
            result["devices reached"] = len(reached)
            result["p50 s"] = reached[len(reached) // 2] - t0 if reached else float("nan")
            result["all s"] = (reached[-1] - t0) if len(reached) >= devices else float("nan")
            if install:
                result["wall s"] = result["done"] - t0
            result["peak MiB"] = peak_rss(server.pid) / 2**20
            result["errors"] = stats.errors
            admin.close()
        result["db MiB"] = database_size(url, work) / 2**20
    return result


def raise_open_files_limit() -> int:
    """Raise this process's open-files limit to the hard limit; return it."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", choices=["wakeup", "rollout"])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--long-poll-devices", type=int, default=15_000)
    parser.add_argument(
        "--budget", type=float, default=900.0, help="seconds each run may take at most"
    )
    args = parser.parse_args()
    print(f"machine: {machine()}; open files: {raise_open_files_limit():,}")
    if args.which == "wakeup":
        rows = []
        for label, push, count in (
            ("MQTT push", True, args.devices),
            ("long-poll", False, min(args.devices, args.long_poll_devices)),
        ):
            print(f"{label}: {count:,} devices")
            with temp_work("wakeup") as tmp:
                r = run_fleet(
                    Path(tmp),
                    devices=count,
                    push=push,
                    install=False,
                    phases=[{"percent": 100}],
                    budget=args.budget,
                    artifact_size=64 * 1024,
                )
            rows.append(
                [
                    label,
                    count,
                    r["devices reached"],
                    r["p50 s"],
                    r["all s"],
                    "yes" if r["all s"] < 60 else "no",
                    r["errors"],
                ]
            )
        print(
            table(
                "Deployment started -> every device checked in (offer received)",
                ["mode", "devices", "reached", "p50 s", "all s", "< 60 s", "device errors"],
                rows,
            )
        )
    else:
        print(f"rollout: {args.devices:,} devices on MQTT push")
        with temp_work("rollout") as tmp:
            phases = [
                {"percent": 1, "soak_seconds": 0},
                {"percent": 10, "soak_seconds": 0},
                {"percent": 50, "soak_seconds": 0},
                {"percent": 100},
            ]
            r = run_fleet(
                Path(tmp),
                devices=args.devices,
                push=True,
                install=True,
                phases=phases,
                budget=args.budget,
                artifact_size=64 * 1024,
            )
        print(
            table(
                "Full phased rollout (1/10/50/100 %)",
                [
                    "devices",
                    "finished",
                    "wall s",
                    "server peak MiB",
                    "< 1 GiB",
                    "database MiB",
                    "device errors",
                ],
                [
                    [
                        args.devices,
                        r["devices reached"],
                        r["wall s"],
                        r["peak MiB"],
                        "yes" if r["peak MiB"] < 1024 else "no",
                        r["db MiB"],
                        r["errors"],
                    ]
                ],
            )
        )


if __name__ == "__main__":
    main()
