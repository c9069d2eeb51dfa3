"""Benchmarks 2 and 4: a virtual fleet against a real server (PostgreSQL, MQTT).

    .venv/bin/python bench/fleet.py wakeup  [--devices 100000] [--profile]   # benchmark 2
    .venv/bin/python bench/fleet.py rollout [--devices 100000] [--profile]   # benchmark 4

``wakeup``: time from "deployment started" (the ``POST /deployments``
returned) to every device having checked in and received the offer, per
device, once with every device on MQTT push (no polls otherwise: their
poll interval is an hour) and once with every device long-polling
(``If-None-Match``, ``wait=600``). Target: under 60 s. A waiting long-poll
holds a socket in the server, and this machine allows 20,000 open files per
process (a hard limit this container cannot raise), so the long-poll run is
capped at ``--long-poll-devices`` (default 18,000) and says so.

``rollout``: a full phased rollout (1 %, 10 %, 50 %, 100 %, no soak) of a
64 KiB artifact to every device on MQTT push: wall time, the server's peak
memory (VmHWM; target under 1 GiB) and the database size. ``--budget``
bounds it; devices finished by then are reported.

The fleet runs in ``--processes`` load-generator processes (default 4),
each a slice of virtual devices (``fleetcast.sim.virtual``): every device
has its own key, token, ETag and installed version and one coroutine; HTTP
goes through a keep-alive pool per process (raw asyncio HTTP/1.1,
``fleetcast.sim._http``): 256 connections for push fleets, one per device
plus 16 for long-poll fleets. Each process has **one** MQTT connection with
one wildcard subscription carrying every device's notices (a real fleet has
one broker connection per device: Mosquitto's per-connection cost is not
measured here), on a throwaway Mosquitto whose per-client queue limit is
lifted (with the default 1,000, Mosquitto drops notices to such a
subscriber: 2,545 of 100,000 in one run). Push devices start as if they had checked in just before
the run (warm = the subscription is in place); long-polling devices first
learn the idle ETag with a short poll, then wait (warm = every long-poll
sent). Offer times are ``time.monotonic()``, system-wide on Linux, so the
processes' times compare. The bench raises its open-files limit to the hard
limit.

The fleet is pre-provisioned: device rows are bulk-inserted and their
tokens minted directly (100,000 ``/auth`` calls are setup, not what is
measured). Server, PostgreSQL, Mosquitto and fleet share the machine's two
cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import queue as queue_module
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _harness import (
    database,
    database_size,
    fleetcast_server,
    free_port,
    machine,
    mosquitto,
    peak_rss,
    provision,
    py_spy_top,
    table,
    temp_work,
)
from tests.factories import make_artifact

from fleetcast.server import Settings
from fleetcast.sim.virtual import FleetMix, FleetStats, VirtualFleet


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
    processes: int,
    workers: int = 1,
    profile: list[tuple[str, float]] | None = None,
) -> dict[str, float]:
    with database("postgres", work) as url, mosquitto(work) as broker:
        topic = f"bench-{work.name}"
        settings = Settings(
            data_dir=work / "data",
            database_url=url,
            mqtt_url=broker if push else None,
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
        result: dict[str, float] = {}
        with fleetcast_server(settings, work, port, workers=workers) as server:
            admin = httpx.Client(base_url=f"{url_base}/api/v1", timeout=600)
            if admin_token is None:
                raise SystemExit("the bench database was not fresh")
            admin.headers["Authorization"] = f"Bearer {admin_token}"
            artifact = admin.post(
                "/artifacts", content=_artifact(work, artifact_size).read_bytes()
            ).json()
            deadline = time.monotonic() + budget
            context = mp.get_context("spawn")
            queue: mp.Queue[tuple[Any, ...]] = context.Queue()
            serials = sorted(fleet_rows.tokens)
            share = -(-devices // processes)
            generators = []
            spy: threading.Thread | None = None
            for index in range(processes):
                first = index * share + 1
                count = min(share, devices - index * share)
                if count <= 0:
                    break
                spec = {
                    "index": index,
                    "url": url_base,
                    "first": first,
                    "count": count,
                    "tokens": {
                        s: fleet_rows.tokens[s] for s in serials[first - 1 : first - 1 + count]
                    },
                    "push": push,
                    "install": install,
                    "topic": topic,
                    "broker": broker,
                    "budget": budget,
                    "devices": devices,
                }
                worker = context.Process(target=fleet_worker, args=(queue, spec), daemon=True)
                worker.start()
                generators.append(worker)
            try:
                ready = 0
                while ready < len(generators) and time.monotonic() < deadline:
                    with contextlib.suppress(queue_module.Empty):
                        message = queue.get(timeout=1.0)
                        if message[0] == "ready":
                            ready += 1
                        else:
                            raise SystemExit(f"fleet process failed: {message}")
                result["warm-up s"] = time.monotonic() - started
                warm = result["warm-up s"]
                print(f"  {ready}/{len(generators)} fleet processes warm after {warm:.0f} s")
                time.sleep(2.0)
                t0 = time.monotonic()
                created = admin.post(
                    "/deployments",
                    json={
                        "name": "bench",
                        "artifact_id": artifact["id"],
                        "target": {"device_types": ["acme-gw"]},
                        "phases": phases,
                    },
                )
                assert created.status_code == 201, created.text
                if profile is not None:
                    # The server while it answers the wake-up, not while it waits.
                    spy = threading.Thread(
                        target=lambda: profile.extend(py_spy_top(server.pid, 20, work, 25))
                    )
                    spy.start()
                reached: list[float] = []
                errors = 0
                done = 0
                while done < len(generators) and time.monotonic() < deadline + 60:
                    with contextlib.suppress(queue_module.Empty):
                        message = queue.get(timeout=1.0)
                        if message[0] == "done":
                            done += 1
                            reached += message[2]
                            errors += message[3]
                        elif message[0] == "failed":
                            raise SystemExit(f"fleet process failed: {message}")
                if install:
                    deployment = created.json()["id"]
                    while time.monotonic() < deadline:
                        status = admin.get(f"/deployments/{deployment}").json()["status"]
                        if status == "completed":
                            break
                        time.sleep(0.5)
                    result["wall s"] = time.monotonic() - t0
            finally:
                if spy is not None:
                    spy.join()
                for worker in generators:
                    worker.join(timeout=30)
                    if worker.is_alive():
                        worker.kill()
            reached.sort()
            result["devices reached"] = len(reached)
            result["p50 s"] = reached[len(reached) // 2] - t0 if reached else float("nan")
            result["all s"] = (reached[-1] - t0) if len(reached) >= devices else float("nan")
            result["peak MiB"] = peak_rss(server.pid) / 2**20
            result["errors"] = errors
            admin.close()
        result["db MiB"] = database_size(url, work) / 2**20
    return result


def fleet_worker(queue: mp.Queue[tuple[Any, ...]], spec: dict[str, Any]) -> None:
    """One load-generator process: a slice of the fleet (``spec``), reported on ``queue``.

    Sends ``("ready", index)`` once every device of the slice has checked in
    once, then ``("done", index, times, errors)``: the ``time.monotonic()``
    (system-wide) at which each device was offered the update (or finished
    installing it).
    """
    try:
        raise_open_files_limit()
        count, push, install = spec["count"], spec["push"], spec["install"]
        fleet = VirtualFleet(
            spec["url"],
            count=count,
            first=spec["first"],
            mix=FleetMix(push=1.0 if push else 0.0),
            tokens=spec["tokens"],
            long_poll=600 if not push else 0,
            poll_interval=3600 if push else 0,
            mqtt_url=spec["broker"] if push else None,
            mqtt_topic_prefix=spec["topic"],
            connections=256 if push else count + 16,
            install=install,
            # Push devices checked in "before the run": the warm-up only waits for
            # the MQTT subscription (their first poll is not what is measured).
            first_checkin=not push,
            # Long-pollers' first (short) polls read the database: spread them at
            # about what the server answers (~100/s here) instead of all at once.
            spread=1.0 if push else spec["devices"] / 100,
        )

        async def scenario() -> FleetStats:
            def reached(stats: FleetStats) -> int:
                return len(stats.finished_at if install else stats.offered_at)

            runner = asyncio.create_task(
                fleet.run(duration=spec["budget"], until=lambda s: reached(s) >= count)
            )

            def warm(stats: FleetStats) -> bool:
                if push:
                    return stats.subscribed
                return stats.checkins >= count and stats.long_polls_sent >= count

            while not warm(fleet.stats) and not runner.done():
                await asyncio.sleep(0.2)
            queue.put(("ready", spec["index"]))
            return await runner

        stats = asyncio.run(scenario())
        times = list((stats.finished_at if install else stats.offered_at).values())
        queue.put(("done", spec["index"], times, stats.errors))
    except BaseException as e:
        queue.put(("failed", spec["index"], repr(e)))
        raise


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
    parser.add_argument(
        "--long-poll-devices",
        type=int,
        default=18_000,
        help="the server holds one socket per waiting device: at most its open-files limit",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server for 20 s after the start"
    )
    parser.add_argument(
        "--processes", type=int, default=4, help="load-generator processes sharing the fleet"
    )
    parser.add_argument(
        "--budget", type=float, default=900.0, help="seconds each run may take at most"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (fleetcast server --workers)"
    )
    parser.add_argument(
        "--modes", default="push,long-poll", help="wakeup: which of push, long-poll to run"
    )
    args = parser.parse_args()
    # Started in the background, a shell ignores SIGINT for us: make both it and
    # SIGTERM stop the run through the context managers (server, database, files).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    print(f"machine: {machine()}; open files: {raise_open_files_limit():,}")
    profiles: dict[str, list[tuple[str, float]]] = {}
    if args.which == "wakeup":
        rows = []
        for label, push, count in (
            ("MQTT push", True, args.devices),
            ("long-poll", False, min(args.devices, args.long_poll_devices)),
        ):
            if ("push" if push else "long-poll") not in args.modes.split(","):
                continue
            profile = profiles.setdefault(label, []) if args.profile else None
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
                    processes=args.processes,
                    workers=args.workers,
                    profile=profile,
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
                processes=args.processes,
                workers=args.workers,
                profile=profiles.setdefault("rollout", []) if args.profile else None,
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
    for label, top in profiles.items():
        print(f"\nServer profile, {label} (py-spy, 20 s after the start, % inclusive):")
        for name, share in top:
            print(f"  {share:5.1f} %  {name}")


if __name__ == "__main__":
    main()
