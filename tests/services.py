"""Throwaway services for the scale-out tests: an S3 server, an MQTT broker, nginx.

Each runs on loopback on a free port, in a temp directory, and is stopped
afterwards. A service that cannot be had here skips the test with the
reason, except in CI (``FLEETCAST_REQUIRE_SERVICES=1``), where it fails.

- S3: moto's server mode (an S3 API emulator; no real S3 server is packaged
  for this machine), in a thread.
- MQTT: the Mosquitto already listening on 127.0.0.1:1883, else a throwaway
  ``mosquitto -p <port>``.
- nginx: Debian's binary with a config and prefix of its own (never the
  system service).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fleetcast.sim.server import free_port


def unavailable(what: str, reason: str) -> None:
    if os.environ.get("FLEETCAST_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required here but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.05)
    return False


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str

    def client(self) -> object:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@contextmanager
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """moto's S3 server on a free port, with one empty bucket; AWS_* set for boto3."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as e:
        unavailable("moto[server]", str(e))
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        s3 = S3Server(f"http://127.0.0.1:{port}", "fleetcast-test")
        # moto keeps its buckets in process-wide state that outlives a server
        # instance: start every test from an empty store.
        httpx.post(f"{s3.endpoint_url}/moto-api/reset", timeout=10).raise_for_status()
        s3.client().create_bucket(Bucket=s3.bucket)  # type: ignore[attr-defined]
        yield s3
    finally:
        server.stop()


@contextmanager
def mqtt_broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """The broker on 127.0.0.1:1883, or a throwaway Mosquitto on a free port."""
    if port_open("127.0.0.1", 1883):
        yield "127.0.0.1", 1883
        return
    binary = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if binary is None:
        unavailable("an MQTT broker", "nothing on 127.0.0.1:1883 and no mosquitto binary")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        if not wait_port("127.0.0.1", port):
            unavailable("an MQTT broker", f"mosquitto did not listen on {port}")
        yield "127.0.0.1", port
    finally:
        process.terminate()
        process.wait(timeout=10)


NGINX_CONF = """\
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/client_body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    sendfile on;
    upstream fleetcast {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location / {{
            proxy_pass http://fleetcast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_read_timeout 120s;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
        }}
        location /_fleetcast_blobs/ {{
            internal;
            alias {blob_dir}/;
        }}
    }}
}}
"""


@dataclass
class Nginx:
    url: str
    root: Path


def nginx_binary() -> str:
    binary = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if binary is None:
        unavailable("nginx", "not installed (apt-get install nginx)")
    assert binary is not None
    return binary


@contextmanager
def nginx(root: Path, upstreams: list[str], blob_dir: Path) -> Iterator[Nginx]:
    """A throwaway nginx in front of ``upstreams`` (host:port), serving ``blob_dir`` internally."""
    binary = nginx_binary()
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(f"        server {u} max_fails=1 fail_timeout=5s;" for u in upstreams)
    conf = root / "nginx.conf"
    # Started as root, nginx's workers would run as nobody, who cannot read the
    # test's blobs (mode 0640, like the server writes them); in production
    # nginx's user is in the server's group instead (docs/deploy.md).
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(
        NGINX_CONF.format(user=user, root=root, servers=servers, port=port, blob_dir=blob_dir)
    )
    process = subprocess.Popen(
        [binary, "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        if not wait_port("127.0.0.1", port):
            process.kill()
            _, err = process.communicate(timeout=10)
            unavailable("nginx", f"did not start: {err.decode(errors='replace')[-500:]}")
        yield Nginx(f"http://127.0.0.1:{port}", root)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
