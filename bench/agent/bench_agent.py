"""Benchmark: the device agent's footprint and install throughput.

    .venv/bin/python bench/agent/bench_agent.py [--image-mib 256] [--idle-seconds 60] [--runs 3]

Prints one table:

- **installed size**: a fresh virtual environment holding only what a device
  needs (fleetcast without extras, and its dependencies at the versions of
  ``requirements-dev.lock``, installed with pip; ``--venv`` reuses one): the
  size of its ``site-packages`` without pip, setuptools and caches;
- **idle memory and CPU**: that venv's ``python3 -m fleetcast.agent`` runs against a tiny
  device-API stand-in (stdlib HTTP server on loopback) that holds each long
  poll and answers "no update"; after a warm-up, RSS is read from
  ``/proc/<pid>/status`` and CPU time from ``/proc/<pid>/stat`` over the window;
- **install throughput**: the baseline is ``dd if=image of=slot bs=1M
  conv=fsync`` followed by ``sha256sum slot`` (copy, flush, hash, as the agent
  must), run in the same process tree on the same files; the agent installs
  the same image from a signed artifact (zstd frames, tar reader, sha256 of
  content and of the compressed member, slot writes, a fsync + checkpoint
  every 4 MiB). Ratio = baseline time / agent time (target at least 0.8).

Not a test: every process started here is stopped here; work files live in a
temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent.config import AgentLimits
from fleetcast.agent.install import FileByteSource, Installer
from fleetcast.artifact import PayloadSource, build_artifact
from fleetcast.core.signing import public_key_to_pem
from fleetcast.core.wire import UpdateOffer

MiB = 1024 * 1024


# ------------------------------------------------------------------ a device-like venv

REPO = Path(__file__).resolve().parents[2]
_SKIP = (
    "pip",
    "setuptools",
    "pkg_resources",
    "_distutils_hack",
    "distutils-precedence",
    "__pycache__",
)


def device_venv(path: Path) -> Path:
    """A venv with fleetcast (no extras) and its dependencies pinned by the lock; its python."""
    python = path / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    names = {
        r.split("==")[0].lower().replace("_", "-")
        for dist in ("cryptography", "pyzstd", "httpx")
        for r in [dist, *_dependencies(dist)]
    }
    pins = [
        line.strip()
        for line in (REPO / "requirements-dev.lock").read_text().splitlines()
        if line.split("==")[0].lower().replace("_", "-").replace(".", "-")
        in {n.replace(".", "-") for n in names}
    ]
    pip = [str(python), "-m", "pip", "install", "--quiet", "--no-cache-dir"]
    subprocess.run([*pip, *pins], check=True)
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True)
    return python


def _dependencies(dist: str) -> list[str]:
    out, todo = [], [dist]
    while todo:
        try:
            requires = metadata.requires(todo.pop()) or []
        except metadata.PackageNotFoundError:
            continue  # a dependency for other Pythons only (exceptiongroup on 3.11)
        for req in requires:
            if "extra ==" in req:
                continue
            name = re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]
            if name not in out:
                out.append(name)
                todo.append(name)
    return out


def installed_size(python: Path) -> tuple[int, list[str]]:
    """Bytes of the venv's site-packages (without pip/setuptools), and the biggest parts."""
    site = next((python.parent.parent / "lib").glob("python3*/site-packages"))
    parts: dict[str, int] = {}
    for path in site.rglob("*"):
        rel = path.relative_to(site).parts
        if path.is_file() and not any(s in rel[0] or s in path.parts for s in _SKIP):
            top = rel[0].split("-")[0].split(".")[0]
            parts[top] = parts.get(top, 0) + path.stat().st_size
    big = sorted(parts.items(), key=lambda kv: -kv[1])[:6]
    return sum(parts.values()), [f"{k} {v / MiB:.1f}" for k, v in big]


# ------------------------------------------------------------------ idle agent


class _DeviceApi(http.server.BaseHTTPRequestHandler):
    """Just enough of the device API for an idle agent: auth, inventory, an empty /next."""

    hold = 5.0
    polls = 0

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", '"none"')
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(200, {"device_id": "bench-1", "token": "t", "expires_in": 86400})

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._answer(200, {})

    def do_GET(self) -> None:
        type(self).polls += 1
        time.sleep(self.hold)
        self._answer(200, {"update": None})


@contextlib.contextmanager
def device_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _DeviceApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _unit_environment() -> dict[str, str]:
    """The ``Environment=`` of the shipped systemd unit: the agent runs as it would there."""
    unit = REPO / "packaging" / "systemd" / "fleetcast-agent.service"
    env = {}
    for line in unit.read_text().splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    return env


UNIT_ENVIRONMENT = _unit_environment()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert match is not None
    return int(match.group(1))


def idle_agent(python: Path, work: Path, seconds: float) -> tuple[float, float, float, int]:
    """(RSS MiB, peak RSS MiB, CPU % of one core, polls) of an idle agent over ``seconds``."""
    key = Ed25519PrivateKey.generate()
    (work / "vendor.pub").write_text(public_key_to_pem(key.public_key()))
    env_file = work / "uboot.env"
    from fleetcast.agent.bootloader import SimulatedUBoot, simulate_boot

    (work / "slot-a.img").write_bytes(b"factory image")
    (work / "slot-b.img").write_bytes(b"")
    SimulatedUBoot.create(env_file, slot_a=work / "slot-a.img", slot_b=work / "slot-b.img")
    simulate_boot(env_file)
    with device_api() as url:
        config = work / "agent.toml"
        config.write_text(
            f'server_url = "{url}"\ndevice_type = "bench"\nstate_dir = "state"\n'
            'trusted_keys = ["vendor.pub"]\nlong_poll = 5\npoll_interval = 5\n\n'
            '[identity]\nserial = "bench-1"\n\n'
            f'[bootloader]\ntype = "simulated"\nenv_file = "{env_file}"\n\n'
            f'[slots]\na = "{work / "slot-a.img"}"\nb = "{work / "slot-b.img"}"\n'
        )
        proc = subprocess.Popen(
            [str(python), "-m", "fleetcast.agent", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **UNIT_ENVIRONMENT},
        )
        try:
            time.sleep(8)  # start-up, key generation, first poll
            cpu0, t0, polls0 = _cpu_seconds(proc.pid), time.monotonic(), _DeviceApi.polls
            samples = []
            while time.monotonic() - t0 < seconds:
                samples.append(_rss_kib(proc.pid))
                time.sleep(1)
            cpu = (_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
            polls = _DeviceApi.polls - polls0
            assert proc.poll() is None, "the agent exited during the idle window"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return statistics.median(samples) / 1024, max(samples) / 1024, cpu, polls


# ------------------------------------------------------------------ install throughput


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def baseline(image: Path, slot: Path) -> float:
    """``dd`` with ``conv=fsync``, then ``sha256sum`` of the slot: seconds."""
    slot.unlink(missing_ok=True)
    dd = _timed(["dd", f"if={image}", f"of={slot}", "bs=1M", "conv=fsync"])
    return dd + _timed(["sha256sum", str(slot)])


def agent_install(artifact: Path, offer: UpdateOffer, key: Ed25519PrivateKey, slot: Path) -> float:
    slot.unlink(missing_ok=True)
    installer = Installer(
        device_type="bench",
        trusted_keys=[key.public_key()],
        limits=AgentLimits(),
        checkpoint=lambda point: None,
    )
    installer.verify_offer(offer, None)
    started = time.perf_counter()
    installer.install(offer, slot, FileByteSource(artifact))
    return time.perf_counter() - started


def throughput(work: Path, mib: int, runs: int) -> tuple[float, float]:
    """Median seconds of (baseline, agent) for an image of ``mib`` MiB."""
    image = work / "rootfs.img"
    with image.open("wb") as fh:
        # Half random (incompressible), half a repeated pattern: closer to a real
        # root file system than either extreme.
        for i in range(mib):
            fh.write(os.urandom(MiB) if i % 2 == 0 else bytes(range(256)) * 4096)
    key = Ed25519PrivateKey.generate()
    artifact = work / "bench.fca"
    signed = build_artifact(
        artifact,
        name="bench-fw",
        version="1.0.0",
        compatible=["bench"],
        payloads=[PayloadSource("rootfs", "rootfs-image", image, {})],
        key=key,
    )
    offer = UpdateOffer(
        deployment_id="bench",
        artifact_id="bench",
        artifact_size=artifact.stat().st_size,
        artifact_sha256="0" * 64,
        download_url="/unused",
        manifest=signed,
        allow_downgrade=False,
    )
    slot = work / "slot.img"
    base, agent = [], []
    for _ in range(runs):
        base.append(baseline(image, slot))
        agent.append(agent_install(artifact, offer, key, slot))
    return statistics.median(base), statistics.median(agent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-mib", type=int, default=256)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--venv", type=Path, help="reuse (or create) this device-like venv")
    args = parser.parse_args()
    for tool in ("dd", "sha256sum"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed for the baseline")
    work = Path(tempfile.mkdtemp(prefix="fleetcast-bench-agent-"))
    try:
        python = device_venv(args.venv or work / "venv")
        size, dists = installed_size(python)
        rss, peak, cpu, polls = idle_agent(python, work, args.idle_seconds)
        base, agent = throughput(work, args.image_mib, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mib = args.image_mib
    python_version = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {python_version}")
    print(f"largest installed parts (MiB): {', '.join(dists)}")
    rows = [
        ("installed size (site-packages)", f"{size / MiB:.1f} MiB", "plus python3 itself"),
        ("idle RSS (median / peak)", f"{rss:.1f} / {peak:.1f} MiB", "target < 40 MiB"),
        ("idle CPU", f"{cpu:.2f} % of one core", f"{polls} long polls of 5 s"),
        (f"baseline: dd + sha256sum, {mib} MiB", f"{base:.2f} s", f"{mib / base:.0f} MiB/s"),
        (f"agent install, {mib} MiB", f"{agent:.2f} s", f"{mib / agent:.0f} MiB/s"),
        ("throughput ratio agent / baseline", f"{base / agent:.2f}x", "target >= 0.8x"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':<24}  note")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<24}  {note}")


if __name__ == "__main__":
    main()
