"""Shared pieces of the benchmarks: servers in subprocesses, bulk-loaded fleets, wrk, tables.

Everything runs on loopback, every loop is bounded in time and count, and
every process started here is stopped here. Not a test: results are printed
as tables with ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert, select

from fleetcast.server import Settings, prepare
from fleetcast.server.db.engine import Database
from fleetcast.server.db.models import Device, utcnow
from fleetcast.server.services.credentials import DeviceTokenSigner, load_device_token_signer

PG_ADMIN = os.environ.get("FLEETCAST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ROOT = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in header], *[[_fmt(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [
        f"\n{title}",
        "| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |",
    ]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ---------------------------------------------------------------------- databases


@contextlib.contextmanager
def database(backend: str, work: Path) -> Iterator[str]:
    """A fresh SQLAlchemy URL on ``backend`` ("sqlite" or "postgres"), dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{work / 'fleetcast.db'}"
        return
    name = f"fleetcast_bench_{secrets.token_hex(4)}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            + "/"
            + name
        )
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def database_size(url: str, work: Path) -> int:
    if url.startswith("sqlite"):
        return sum(p.stat().st_size for p in work.glob("fleetcast.db*"))
    name = url.rsplit("/", 1)[1]

    async def size() -> int:
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            return int(await conn.fetchval("SELECT pg_database_size($1)", name))
        finally:
            await conn.close()

    return asyncio.run(size())


@dataclass
class Fleet:
    """A bulk-loaded fleet: ``tokens`` for the first ``sampled`` devices, by serial."""

    count: int
    tokens: dict[str, tuple[str, str]]


def provision(
    settings: Settings,
    count: int,
    *,
    sampled: int,
    public_keys: dict[str, str] | None = None,
    prefix: str = "vdev",
) -> Fleet:
    """Insert ``count`` accepted devices directly (not through the API) and mint tokens.

    Device ``i`` has serial ``{prefix}-{i:07d}`` (as :mod:`fleetcast.sim.virtual`
    names them) and, when ``public_keys`` is given, that public key.
    """
    prepare(settings)
    return asyncio.run(_provision(settings, count, sampled, public_keys or {}, prefix))


async def _provision(
    settings: Settings, count: int, sampled: int, public_keys: dict[str, str], prefix: str
) -> Fleet:
    db = Database.connect(settings.resolved_database_url)
    now = utcnow()
    placeholder = "-----BEGIN PUBLIC KEY-----\nbulk-loaded\n-----END PUBLIC KEY-----\n"
    ids: dict[str, str] = {}
    try:
        batch: list[dict[str, Any]] = []

        async def flush() -> None:
            async with db.sessions() as session:
                await session.execute(insert(Device), batch)
                await session.commit()
            batch.clear()

        for index in range(1, count + 1):
            serial = f"{prefix}-{index:07d}"
            identity = json.dumps({"serial": serial}, separators=(",", ":"), sort_keys=True)
            device_id = str(uuid.UUID(bytes=hashlib.sha256(serial.encode()).digest()[:16]))
            if index <= sampled:
                ids[serial] = device_id
            batch.append(
                {
                    "id": device_id,
                    "identity_json": identity,
                    "identity_hash": hashlib.sha256(identity.encode()).hexdigest(),
                    "public_key": public_keys.get(serial, placeholder),
                    "public_key_id": hashlib.sha256(serial.encode()).hexdigest(),
                    "device_type": "acme-gw",
                    "status": "accepted",
                    "attributes": {},
                    "artifact_name": "acme-fw",
                    "artifact_version": "1.0.0",
                    "created_at": now,
                    "updated_at": now,
                    "last_seen_at": now,
                }
            )
            if len(batch) >= 20_000:
                await flush()
        if batch:
            await flush()
        async with db.sessions() as session:
            signer: DeviceTokenSigner = await load_device_token_signer(session)
            assert await session.scalar(select(Device.id).limit(1)) is not None
    finally:
        await db.close()
    tokens = {s: (i, signer.issue(i, 24 * 3600)) for s, i in ids.items()}
    return Fleet(count, tokens)


# ---------------------------------------------------------------------- processes


@contextlib.contextmanager
def process(
    argv: Sequence[str], log: Path, env: dict[str, str] | None = None, port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess in its own group, stopped (SIGTERM, then SIGKILL) afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        try:
            if port is not None:
                wait_port(port)
            yield proc
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


@contextlib.contextmanager
def mosquitto(work: Path) -> Iterator[str]:
    """A throwaway Mosquitto (Debian package) on a free port; its ``mqtt://`` URL.

    A benchmark's load generator carries thousands of devices' notices on one
    wildcard subscription, so the per-client queue limit that protects a
    broker from one slow device (``max_queued_messages``, 1000 by default;
    beyond it Mosquitto drops even QoS 0 messages) is lifted: a real device
    receives one notice per deployment, on its own connection.
    """
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit("this benchmark needs mosquitto (Debian package mosquitto)")
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 0\nmax_queued_bytes 0\n"
    )
    with process([binary, "-c", str(conf)], work / "mosquitto.log", port=port):
        yield f"mqtt://127.0.0.1:{port}"


def uvicorn_argv(target: str, port: int, *, factory: bool = False, workers: int = 1) -> list[str]:
    """The same uvicorn command line for Fleetcast and for the bare baseline."""
    argv = [sys.executable, "-m", "uvicorn", target, "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--log-level", "warning", "--no-access-log", "--workers", str(workers)]
    return [*argv, "--factory"] if factory else argv


@contextlib.contextmanager
def fleetcast_server(
    settings: Settings, work: Path, port: int, *, workers: int = 1
) -> Iterator[subprocess.Popen[bytes]]:
    env = {"FLEETCAST_SETTINGS_JSON": settings.model_dump_json(), "PYTHONPATH": str(ROOT)}
    argv = uvicorn_argv(
        "fleetcast.server.app:create_app_from_environment", port, factory=True, workers=workers
    )
    with process(argv, work / f"server-{port}.log", env, port) as proc:
        yield proc


def peak_rss(pid: int) -> int:
    """Peak resident memory (VmHWM) of ``pid`` and its children, in bytes."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for p in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


# ---------------------------------------------------------------------- wrk


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    transfer_mb_per_second: float
    errors: str
    #: Complete responses with a status other than 2xx/3xx, counted in requests_per_second.
    failed: int = 0


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    script: Path | None = None,
    threads: int = 1,
    headers: Sequence[str] = (),
    timeout: int = 30,
) -> WrkResult:
    """Run wrk once (bounded by ``seconds``) and parse its summary.

    ``timeout``: seconds one response may take before wrk counts it as an error.
    """
    argv = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--latency",
        "--timeout",
        f"{timeout}s",
    ]
    for header in headers:
        argv += ["-H", header]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}
    mbps = float(transfer.group(1)) * scale.get(transfer.group(2), 1.0) if transfer else 0.0
    p50 = re.search(r"\s50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    problems = ", ".join(
        x
        for x in (
            errors.group(1) if errors else "",
            f"non-2xx/3xx {non2xx.group(1)}" if non2xx else "",
        )
        if x
    )
    return WrkResult(
        rps,
        _ms(p50.group(1)) if p50 else float("nan"),
        _ms(p99.group(1)) if p99 else float("nan"),
        mbps,
        problems or "none",
        int(non2xx.group(1)) if non2xx else 0,
    )


def token_script(work: Path, tokens: Sequence[str], *, etag: str | None) -> Path:
    """A wrk Lua script sending each request with a random device's bearer token."""
    listing = work / "tokens.txt"
    listing.write_text("\n".join(tokens) + "\n")
    extra = f'\n  wrk.headers["If-None-Match"] = {json.dumps(etag)}' if etag else ""
    script = work / "tokens.lua"
    script.write_text(
        f"""
local tokens = {{}}
for line in io.lines({json.dumps(str(listing))}) do tokens[#tokens + 1] = line end
math.randomseed(os.time())
request = function()
  wrk.headers["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]{extra}
  return wrk.format("GET", wrk.path)
end
"""
    )
    return script


def py_spy_top(pid: int, seconds: int, work: Path, limit: int = 12) -> list[tuple[str, float]]:
    """Profile ``pid`` with py-spy for ``seconds``; the functions most often on the stack."""
    raw = work / "profile.txt"
    subprocess.run(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--output",
            str(raw),
            "--nonblocking",
        ],
        capture_output=True,
        timeout=seconds + 60,
        check=False,
    )
    if not raw.exists():
        return []
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        for frame in set(stack.split(";")):
            name = re.sub(r" \(.*?/(site-packages|src)/", " (", frame)
            inclusive[name] = inclusive.get(name, 0) + count
    ranked = sorted(inclusive.items(), key=lambda kv: -kv[1])
    return [
        (name, 100.0 * n / total)
        for name, n in ranked
        if "fleetcast" in name or "sqlalchemy" in name.lower()
    ][:limit]


def temp_work(name: str) -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix=f"fleetcast-bench-{name}-")
