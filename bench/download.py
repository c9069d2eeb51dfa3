"""Benchmark 3: artifact download throughput with many concurrent clients.

    .venv/bin/python bench/download.py [--clients 1000] [--size-mib 4] [--seconds 15]

Three ways to send the same file, each measured with wrk (one thread,
``--clients`` connections, every request carrying a device token):

1. Fleetcast direct: uvicorn sends the file (``FileResponse``);
2. Fleetcast authorising + nginx sending: nginx proxies to Fleetcast, which
   answers ``X-Accel-Redirect``; nginx sends the bytes (sendfile);
3. nginx alone serving the file as a static location (the baseline).

Targets: (2) at least 0.9x of (3); (1) at least 0.5x of (3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    database,
    fleetcast_server,
    free_port,
    machine,
    process,
    provision,
    table,
    temp_work,
    wait_port,
    wrk,
)

from fleetcast.server import Settings

NGINX = """\
{user}
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {root}/cb; proxy_temp_path {root}/px; fastcgi_temp_path {root}/fc;
    uwsgi_temp_path {root}/uw; scgi_temp_path {root}/sc;
    sendfile on; tcp_nopush on;
    upstream fleetcast {{ server 127.0.0.1:{upstream}; keepalive 256; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location /api/ {{
            proxy_pass http://fleetcast;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
        }}
        location /_fleetcast_blobs/ {{ internal; alias {blobs}/; }}
        location /static/ {{ alias {blobs}/; }}
    }}
}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--size-mib", type=float, default=4.0)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    print(f"machine: {machine()}")
    print(
        f"file {args.size_mib} MiB, wrk 1 thread x {args.clients} connections,"
        f" {args.seconds} s per run"
    )
    with temp_work("download") as tmp, database("sqlite", Path(tmp)) as url:
        work = Path(tmp)
        settings = Settings(
            data_dir=work / "data", database_url=url, accel_redirect_prefix="/_fleetcast_blobs"
        )
        fleet = provision(settings, 10, sampled=1)
        _, token = next(iter(fleet.tokens.values()))
        blob = os.urandom(int(args.size_mib * 2**20))
        key = __import__("hashlib").sha256(blob).hexdigest()
        blob_dir = work / "data" / "blobs"
        (blob_dir / key[:2]).mkdir(parents=True, exist_ok=True)
        (blob_dir / key[:2] / key).write_bytes(blob)
        artifact_id = _register(settings, key, len(blob))
        rows = []
        auth = [f"Authorization: Bearer {token}"]
        path = f"/api/device/v1/artifacts/{artifact_id}/download"
        direct_port, accel_port, proxy_port = free_port(), free_port(), free_port()
        direct = Settings(**{**settings.model_dump(), "accel_redirect_prefix": None})
        with fleetcast_server(direct, work, direct_port):
            check = httpx.get(
                f"http://127.0.0.1:{direct_port}{path}",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert check.content == blob, check.status_code
            direct_result = wrk(
                f"http://127.0.0.1:{direct_port}{path}",
                connections=args.clients,
                seconds=args.seconds,
                headers=auth,
            )
        with fleetcast_server(settings, work, accel_port):
            root = work / "nginx"
            root.mkdir()
            conf = root / "nginx.conf"
            user = "user root;" if os.geteuid() == 0 else ""
            conf.write_text(
                NGINX.format(
                    user=user, root=root, upstream=accel_port, port=proxy_port, blobs=blob_dir
                )
            )
            with process(
                [nginx, "-p", str(root), "-c", str(conf), "-g", "daemon off;"], work / "nginx.log"
            ):
                wait_port(proxy_port)
                check = httpx.get(
                    f"http://127.0.0.1:{proxy_port}{path}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert check.content == blob, check.status_code
                static = f"http://127.0.0.1:{proxy_port}/static/{key[:2]}/{key}"
                assert httpx.get(static).content == blob
                baseline = wrk(static, connections=args.clients, seconds=args.seconds, headers=auth)
                accel = wrk(
                    f"http://127.0.0.1:{proxy_port}{path}",
                    connections=args.clients,
                    seconds=args.seconds,
                    headers=auth,
                )
        for name, result in (
            ("nginx alone (baseline)", baseline),
            ("Fleetcast authorises, nginx sends", accel),
            ("Fleetcast direct (uvicorn)", direct_result),
        ):
            rows.append(
                [
                    name,
                    result.requests_per_second,
                    result.transfer_mb_per_second,
                    result.p50_ms,
                    result.p99_ms,
                    result.requests_per_second / baseline.requests_per_second,
                    result.errors,
                ]
            )
        print(
            table(
                "Artifact downloads",
                ["path", "downloads/s", "MiB/s", "p50 ms", "p99 ms", "vs nginx", "errors"],
                rows,
            )
        )


def _register(settings: Settings, key: str, size: int) -> str:
    """An artifact row for the blob (the bytes are random: devices would refuse them)."""
    import asyncio
    import uuid

    from fleetcast.server.db.engine import Database
    from fleetcast.server.db.models import Artifact

    async def run() -> str:
        db = Database.connect(settings.resolved_database_url)
        try:
            async with db.sessions() as session:
                row = Artifact(
                    id=str(uuid.uuid4()),
                    name="bench",
                    version="1.0.0",
                    compatible=["acme-gw"],
                    payload_type="rootfs-image",
                    size=size,
                    sha256=key,
                    signer_keyid="bench",
                    manifest={},
                    blob_key=key,
                )
                session.add(row)
                await session.commit()
                return row.id
        finally:
            await db.close()

    return asyncio.run(run())


if __name__ == "__main__":
    main()
