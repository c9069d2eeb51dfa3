"""Benchmark 3: artifact download throughput with many concurrent clients.

    .venv/bin/python bench/download.py [--clients 1000] [--size-mib 4] [--seconds 60] [--profile]

Three ways to send the same file, each measured with wrk (one thread,
``--clients`` connections, every request carrying a device token):

1. Fleetcast direct: uvicorn sends the file (``FileResponse``);
2. Fleetcast authorising + nginx sending: nginx proxies to Fleetcast, which
   answers ``X-Accel-Redirect``; nginx sends the bytes (sendfile);
3. nginx alone serving the file as a static location (the baseline).

One nginx (``worker_processes`` = cores, sendfile, keep-alive both to the
clients and to Fleetcast) serves (2) and (3), so both have the same
configuration; the three are measured in turn, ``--rounds`` times, and the
median ratio is reported. Targets: (2) at least 0.9x of (3); (1) at least
0.5x of (3).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import threading
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    WrkResult,
    database,
    fleetcast_server,
    free_port,
    machine,
    process,
    provision,
    py_spy_top,
    table,
    temp_work,
    token_script,
    wait_port,
    wrk,
)

from fleetcast.server import Settings

NGINX = """\
{user}
worker_processes {workers};
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {root}/cb; proxy_temp_path {root}/px; fastcgi_temp_path {root}/fc;
    uwsgi_temp_path {root}/uw; scgi_temp_path {root}/sc;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_timeout 65; keepalive_requests 1000000;
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
    parser.add_argument(
        "--seconds", type=int, default=60, help="per run: long enough for 1,000 to complete"
    )
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the authorising Fleetcast afterwards"
    )
    parser.add_argument(
        "--nginx-workers", type=int, default=os.cpu_count() or 1, help="the same for both"
    )
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
        # One device per client: each request carries a random one's token, so
        # authorisation is not one remembered device over and over.
        fleet = provision(settings, args.clients, sampled=args.clients)
        tokens = [token for _, token in fleet.tokens.values()]
        token = tokens[0]
        script = token_script(work, tokens, etag=None)
        blob = os.urandom(int(args.size_mib * 2**20))
        key = __import__("hashlib").sha256(blob).hexdigest()
        blob_dir = work / "data" / "blobs"
        (blob_dir / key[:2]).mkdir(parents=True, exist_ok=True)
        (blob_dir / key[:2] / key).write_bytes(blob)
        artifact_id = _register(settings, key, len(blob))
        path = f"/api/device/v1/artifacts/{artifact_id}/download"
        direct_port, accel_port, proxy_port = free_port(), free_port(), free_port()
        direct = Settings(**{**settings.model_dump(), "accel_redirect_prefix": None})
        root = work / "nginx"
        root.mkdir()
        conf = root / "nginx.conf"
        user = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(
            NGINX.format(
                user=user,
                root=root,
                upstream=accel_port,
                port=proxy_port,
                blobs=blob_dir,
                workers=args.nginx_workers,
            )
        )
        samples: dict[str, list[WrkResult]] = {name: [] for name in PATHS}
        # All three up at once and measured in turn, round after round: the
        # machine is shared, so each ratio compares runs seconds apart.
        profile: list[tuple[str, float]] = []
        with (
            fleetcast_server(direct, work, direct_port),
            fleetcast_server(settings, work, accel_port) as accel_server,
            process(
                [nginx, "-p", str(root), "-c", str(conf), "-g", "daemon off;"], work / "nginx.log"
            ),
        ):
            wait_port(proxy_port)
            headers = {"Authorization": f"Bearer {token}"}
            urls = {
                "nginx": f"http://127.0.0.1:{proxy_port}/static/{key[:2]}/{key}",
                "accel": f"http://127.0.0.1:{proxy_port}{path}",
                "direct": f"http://127.0.0.1:{direct_port}{path}",
            }
            for url_ in urls.values():
                assert httpx.get(url_, headers=headers).content == blob, url_
            for url_ in urls.values():  # warm-up
                wrk(url_, connections=args.clients, seconds=3, script=script)
            for _ in range(args.rounds):
                for name, url_ in urls.items():
                    samples[name].append(
                        wrk(
                            url_,
                            connections=args.clients,
                            seconds=args.seconds,
                            script=script,
                            # A big file to 1,000 clients takes long: not an error.
                            timeout=args.seconds,
                        )
                    )
            if args.profile:
                spy = threading.Thread(
                    target=lambda: profile.extend(py_spy_top(accel_server.pid, 15, work, 20))
                )
                spy.start()
                wrk(urls["accel"], connections=args.clients, seconds=20, script=script)
                spy.join()
        rows = []
        for name, label in PATHS.items():
            # wrk's requests include error answers: count successful downloads only.
            for r in samples[name]:
                r.requests_per_second -= r.failed / args.seconds
            ratios = [
                r.requests_per_second / b.requests_per_second
                for r, b in zip(samples[name], samples["nginx"], strict=True)
            ]
            # Latencies of the round whose ratio is the median one.
            best = samples[name][
                sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
            ]
            rows.append(
                [
                    label,
                    statistics.median(r.requests_per_second for r in samples[name]),
                    statistics.median(r.transfer_mb_per_second for r in samples[name]),
                    best.p50_ms,
                    best.p99_ms,
                    statistics.median(ratios),
                    f"{min(ratios):.2f}-{max(ratios):.2f}",
                    ", ".join(sorted({r.errors for r in samples[name]})),
                ]
            )
        print(
            table(
                f"Artifact downloads (median of {args.rounds} rounds)",
                [
                    "path",
                    "downloads/s",
                    "MiB/s",
                    "p50 ms",
                    "p99 ms",
                    "vs nginx",
                    "range",
                    "errors",
                ],
                rows,
            )
        )
        if profile:
            print("\nProfile of the authorising Fleetcast (py-spy, % of samples, inclusive):")
            for name, share in profile:
                print(f"  {share:5.1f} %  {name}")


PATHS = {
    "nginx": "nginx alone (baseline)",
    "accel": "Fleetcast authorises, nginx sends",
    "direct": "Fleetcast direct (uvicorn)",
}


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
