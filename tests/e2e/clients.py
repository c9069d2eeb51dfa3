"""Real third-party update clients for the end-to-end tests: SWUpdate and the Mender client.

Each client runs as its own process with its own temporary directories
(state, sockets, keys) and is killed by process id when the test ends. The
Debian packages are installed when missing (``apt-get install swupdate
mender-client mender-artifact``); when that is impossible the tests are
skipped with the reason, unless ``FLEETCAST_REQUIRE_SERVICES=1`` (CI).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.swu import HW_BOARD, HW_REVISION

APT_PACKAGES = {
    "swupdate": "swupdate",
    "mender": "mender-client",
    "mender-artifact": "mender-artifact",
}


def require_binary(name: str) -> str:
    """The path of a client binary, installing its Debian package when missing."""
    found = shutil.which(name)
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "--no-install-recommends", APT_PACKAGES[name]]
        result = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:  # the package lists may be missing
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, check=False)
            subprocess.run(install, capture_output=True, env=env, check=False)
        found = shutil.which(name)
    if found is None:
        reason = f"{name} is not installed and 'apt-get install {APT_PACKAGES[name]}' failed"
        if os.environ.get("FLEETCAST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}; FLEETCAST_REQUIRE_SERVICES=1 requires it")
        pytest.skip(reason)
    return found


@dataclass
class ClientProcess:
    """One client process; its output goes to ``log``."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> ClientProcess:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env},
                # Its own process group: swupdate forks helpers, all die with it.
                start_new_session=True,
            )
        return self

    def kill(self) -> None:
        """Kill the process group this client leads, by its pid."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Swupdate:
    """SWUpdate in suricatta (hawkBit DDI) mode, as a device would run it."""

    root: Path
    server_url: str
    controller_id: str
    target_token: str
    cert: Path
    binary: str
    processes: list[ClientProcess] = field(default_factory=list)

    def _config(self) -> Path:
        config = self.root / "swupdate.cfg"
        config.write_text(
            "globals : { verbose = true; loglevel = 6; };\n"
            "identify : (\n"
            '  { name = "device_type"; value = "acme-swu"; },\n'
            f'  {{ name = "serial"; value = "{self.controller_id}"; }}\n'
            ");\n"
        )
        return config

    def start(self, *, confirm: int | None = None) -> ClientProcess:
        """Start suricatta; ``confirm`` 2 (success) or 3 (failure) reports a test result."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        suricatta = (
            f"-t default -u {self.server_url} -i {self.controller_id} -k {self.target_token} "
            "-r 10 -w 1"
        )
        if confirm is not None:
            suricatta += f" -c {confirm}"
        process = ClientProcess(
            "swupdate",
            [
                self.binary,
                "-v",
                "-f",
                str(self._config()),
                "-H",
                f"{HW_BOARD}:{HW_REVISION}",
                "-k",
                str(self.cert),
                "-u",
                suricatta,
            ],
            self.root / "swupdate.log",
            # swupdate's control sockets live in TMPDIR: one directory per device.
            env={"TMPDIR": str(tmp)},
        ).start()
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in self.processes:
            process.kill()

    def output(self) -> str:
        return self.processes[-1].output() if self.processes else ""


#: The Mender client's identity script has a fixed path; ours reads the identity from
#: the environment, so several clients on one machine are several devices.
IDENTITY_SCRIPT = Path("/usr/share/mender/identity/mender-device-identity")
ARTIFACT_INFO = Path("/etc/mender/artifact_info")
MARKER = "# fleetcast test identity"


@contextlib.contextmanager
def mender_host_files(initial_artifact: str) -> Iterator[str]:
    """Install the identity script and artifact_info the client reads from fixed paths.

    Files that exist already are left alone (and reused); files created here
    are removed afterwards. Yields the artifact name the client starts with.
    """
    created: list[Path] = []
    if not IDENTITY_SCRIPT.exists():
        IDENTITY_SCRIPT.parent.mkdir(parents=True, exist_ok=True)
        IDENTITY_SCRIPT.write_text(
            f'#!/bin/sh\n{MARKER}\necho "serial=${{FLEETCAST_MENDER_SERIAL:-unknown}}"\n'
        )
        IDENTITY_SCRIPT.chmod(0o755)
        created.append(IDENTITY_SCRIPT)
    elif MARKER not in IDENTITY_SCRIPT.read_text(errors="replace"):
        pytest.skip(f"{IDENTITY_SCRIPT} is this machine's own; not replacing it")
    name = initial_artifact
    if ARTIFACT_INFO.exists():
        for line in ARTIFACT_INFO.read_text().splitlines():
            if line.startswith("artifact_name="):
                name = line.split("=", 1)[1].strip()
    else:
        ARTIFACT_INFO.parent.mkdir(parents=True, exist_ok=True)
        ARTIFACT_INFO.write_text(f"artifact_name={initial_artifact}\n")
        created.append(ARTIFACT_INFO)
    try:
        yield name
    finally:
        for path in created:
            path.unlink(missing_ok=True)


@dataclass
class MenderClient:
    """The Mender client in daemon mode with its own data directory and configuration."""

    root: Path
    server_url: str
    ca_cert: Path
    serial: str
    binary: str
    device_type: str = "acme-mender"
    process: ClientProcess | None = None

    def start(self) -> ClientProcess:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        (data / "device_type").write_text(f"device_type={self.device_type}\n")
        config = self.root / "mender.conf"
        config.write_text(
            json.dumps(
                {
                    "ServerURL": self.server_url,
                    "ServerCertificate": str(self.ca_cert),
                    "UpdatePollIntervalSeconds": 1,
                    "InventoryPollIntervalSeconds": 1,
                    "RetryPollIntervalSeconds": 1,
                    "DBus": {"Enabled": False},
                }
            )
        )
        self.process = ClientProcess(
            "mender",
            [
                self.binary,
                "--config",
                str(config),
                "--fallback-config",
                str(self.root / "no-fallback.conf"),
                "--data",
                str(data),
                "--log-level",
                "debug",
                "--no-syslog",
                "daemon",
            ],
            self.root / "mender.log",
            env={"FLEETCAST_MENDER_SERIAL": self.serial},
        ).start()
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()

    def output(self) -> str:
        return self.process.output() if self.process else ""


class DroppingProxy:
    """A TCP proxy that cuts the first artifact download after ``cut_after`` bytes.

    It records every request head it forwards, so a test can check that the
    client resumed with ``Range``.
    """

    def __init__(self, upstream_port: int, cut_after: int) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.requests: list[str] = []
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DroppingProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        state = {"cut_at": -1, "sent": 0}

        def upward() -> None:
            with contextlib.suppress(OSError):
                while data := client.recv(65536):
                    head = data.decode("latin-1").split("\r\n\r\n", 1)[0]
                    if head.startswith(("GET ", "POST ", "PUT ")):
                        self.requests.append(head)
                        if "/softwaremodules/" in head and self.cuts == 0:
                            self.cuts += 1
                            state["cut_at"] = state["sent"] + self.cut_after
                    upstream.sendall(data)
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

        threading.Thread(target=upward, daemon=True).start()
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                cut_at = state["cut_at"]
                if 0 <= cut_at < state["sent"] + len(data):
                    client.sendall(data[: max(0, cut_at - state["sent"])])
                    break
                client.sendall(data)
                state["sent"] += len(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
