"""Soak: a simulated fleet against a real server for a set time, resources watched.

A ``fleetcast server`` subprocess (SQLite, or PostgreSQL with ``--database-url``)
serves a fleet of real agents (threads of this process, simulated hardware)
that long-poll continuously, while rollouts run back to back (1.0.0 -> 1.1.0
-> 1.0.0 ..., downgrades allowed). Every ``--interval`` seconds the server's
resident memory, open file descriptors and database size are sampled.

What must hold after the warm-up (the first quarter of the run):

- memory: the median of the last third is at most 10% + 16 MiB above the
  median of the first third (no leak per request or per rollout);
- file descriptors: never more than 8 above the first third's maximum;
- database: grows only by the history it must keep, at most 4 KiB per
  recorded event (status reports are append-only; polls write nothing
  but batched last-seen times).

    python bench/soak/soak.py --duration 600 --devices 20      # a real soak
    python bench/soak/soak.py --duration 20                    # what make test runs

Exit status 1 when a bound is broken; the samples are printed as a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.artifact import PayloadSource, build_artifact
from fleetcast.cli._api import ManagementClient
from fleetcast.core.signing import public_key_to_pem
from fleetcast.sim import SimulatedFleet
from fleetcast.sim.server import free_port

MiB = 1024 * 1024


@dataclass
class Sample:
    at: float
    rss: int
    fds: int
    db_bytes: int
    events: int


@dataclass
class SoakReport:
    samples: list[Sample]
    rollouts: int
    requests_hint: int
    problems: list[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>5} {'DB KiB':>8} {'events':>7}"]
        for s in self.samples:
            lines.append(
                f"{s.at:7.1f} {s.rss / MiB:8.1f} {s.fds:5d} {s.db_bytes / 1024:8.0f} {s.events:7d}"
            )
        return "\n".join(lines)


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _db_bytes(data_dir: Path, database_url: str | None) -> int:
    if database_url is None:
        # The database's pages (committed WAL content included), not the files:
        # the WAL file grows to the checkpoint size and back whatever the data.
        db = sqlite3.connect(f"file:{data_dir / 'fleetcast.db'}?mode=ro", uri=True, timeout=10)
        try:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            size = db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            db.close()
        return int(pages) * int(size)
    name = database_url.rsplit("/", 1)[1]
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def size() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT pg_database_size($1)", name))
        finally:
            await conn.close()

    return asyncio.run(size())


def check(report: SoakReport) -> list[str]:
    """The bounds of the module docstring; returns what broke them."""
    samples = report.samples
    steady = samples[len(samples) // 4 :]
    if len(steady) < 6:
        return [f"too few samples after the warm-up ({len(steady)}); run longer"]
    third = len(steady) // 3
    first, last = steady[:third], steady[-third:]
    problems = []
    rss_first = statistics.median(s.rss for s in first)
    rss_last = statistics.median(s.rss for s in last)
    if rss_last > rss_first * 1.10 + 16 * MiB:
        problems.append(f"memory grew from {rss_first / MiB:.1f} to {rss_last / MiB:.1f} MiB")
    fd_limit = max(s.fds for s in first) + 8
    if max(s.fds for s in last) > fd_limit:
        problems.append(f"file descriptors grew to {max(s.fds for s in last)} (> {fd_limit})")
    grown = steady[-1].db_bytes - steady[0].db_bytes
    events = steady[-1].events - steady[0].events
    if grown > 4096 * events + 256 * 1024:
        problems.append(f"database grew {grown} bytes for {events} new events")
    return problems


def run_soak(
    *, duration: float, devices: int, interval: float, database_url: str | None = None
) -> SoakReport:
    """Run the soak (see the module docstring) and return its samples and problems."""
    with tempfile.TemporaryDirectory(prefix="fleetcast-soak-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir, port = tmp / "server", free_port()
        log = (tmp / "server.log").open("wb")
        args = [sys.executable, "-m", "fleetcast", "server", "--data-dir", str(data_dir)]
        args += ["--port", str(port)] + (["--database-url", database_url] if database_url else [])
        env = {**os.environ, "FLEETCAST_ENGINE_INTERVAL": "0.2", "COLUMNS": "200"}
        server = subprocess.Popen(args, stdout=log, stderr=log, env=env)
        url = f"http://127.0.0.1:{port}"
        fleet: SimulatedFleet | None = None
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{url}/openapi.json", timeout=1)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.05)
            token = re.search(r"FLEETCAST_TOKEN=(\S+)", (tmp / "server.log").read_text())
            assert token is not None
            admin = ManagementClient(url, token.group(1))
            key = Ed25519PrivateKey.generate()
            pub = tmp / "vendor.pub"
            pub.write_text(public_key_to_pem(key.public_key()))
            images = {v: os.urandom(256 * 1024) for v in ("1.0.0", "1.1.0")}
            artifact_ids = {}
            for version, image in images.items():
                (tmp / version).write_bytes(image)
                build_artifact(
                    tmp / f"{version}.fca",
                    name="soak-fw",
                    version=version,
                    compatible=["soak-gw"],
                    payloads=[PayloadSource("rootfs", "rootfs-image", tmp / version, {})],
                    key=key,
                )
                artifact_ids[version] = admin.upload_artifact(tmp / f"{version}.fca")["id"]
            fleet = SimulatedFleet(tmp / "fleet", url, [pub])
            fleet.add(
                devices,
                device_type="soak-gw",
                image=images["1.0.0"],
                artifact_name="soak-fw",
                artifact_version="1.0.0",
                health_commands=[],
                long_poll=1,
                poll_interval=0.2,
            )
            fleet.start()
            while len(admin.get("/devices", status="pending")["items"]) < devices:
                time.sleep(0.2)
            ids = []
            for device in admin.get("/devices", status="pending", limit=devices)["items"]:
                admin.post(f"/devices/{device['id']}/accept")
                ids.append(device["id"])
            samples: list[Sample] = []
            rollouts = 0
            stop = threading.Event()

            def roll() -> None:
                nonlocal rollouts
                version = "1.1.0"
                while not stop.is_set():
                    dep = admin.post(
                        "/deployments",
                        {
                            "name": f"soak {rollouts}",
                            "artifact_id": artifact_ids[version],
                            "target": {"device_ids": ids},
                            "allow_downgrade": True,
                        },
                    )
                    while not stop.wait(0.3):
                        if admin.get(f"/deployments/{dep['id']}")["status"] == "completed":
                            rollouts += 1
                            break
                    version = "1.0.0" if version == "1.1.0" else "1.1.0"

            roller = threading.Thread(target=roll, daemon=True)
            roller.start()
            started = time.monotonic()
            # At least two rollouts however slow the machine (up to 3x the duration):
            # a soak that saw one rollout says little about what repeats.
            while (elapsed := time.monotonic() - started) < duration or (
                rollouts < 2 and elapsed < 3 * duration
            ):
                events = admin.get("/events", limit=1)["items"]
                samples.append(
                    Sample(
                        at=elapsed,
                        rss=_rss(server.pid),
                        fds=_fds(server.pid),
                        db_bytes=_db_bytes(data_dir, database_url),
                        events=events[0]["id"] if events else 0,
                    )
                )
                time.sleep(interval)
            stop.set()
            roller.join(timeout=30)
            report = SoakReport(samples=samples, rollouts=rollouts, requests_hint=devices)
            report.problems = check(report)
            return report
        finally:
            if fleet is not None:
                fleet.stop()
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of soak")
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    options = parser.parse_args()
    report = run_soak(
        duration=options.duration,
        devices=options.devices,
        interval=options.interval,
        database_url=options.database_url,
    )
    print(report.table())
    print(f"rollouts completed: {report.rollouts}")
    for problem in report.problems:
        print(f"PROBLEM: {problem}")
    print("resources stayed flat" if not report.problems else "resources did NOT stay flat")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
