"""Benchmark 1: idle check-in throughput and latency with a million registered devices.

    .venv/bin/python bench/checkin.py [--devices 1000000] [--seconds 15] [--connections 64]

For SQLite and PostgreSQL: bulk-load the devices, start the server with
uvicorn (one worker), and hammer ``GET /api/device/v1/next`` with wrk
(one thread), each request carrying a random device's token and the
"nothing to do" ETag, as an idle agent sends it (answer: 304). The baseline
is a bare Starlette endpoint answering the same route with a constant 304,
served by the same uvicorn command line in the same run. Target: Fleetcast
at least half the bare endpoint's throughput. ``--profile`` adds a py-spy
profile of the server during a second Fleetcast run.
"""

from __future__ import annotations

import argparse
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
    py_spy_top,
    table,
    temp_work,
    token_script,
    uvicorn_argv,
    wrk,
)

from fleetcast.server import Settings

ROUTE = "/api/device/v1/next"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--sampled", type=int, default=20_000, help="devices whose tokens wrk uses")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"{args.devices:,} devices, wrk 1 thread x {args.connections} connections,"
        f" {args.seconds} s per run"
    )
    rows = []
    profiles = {}
    with temp_work("baseline") as tmp:
        work = Path(tmp)
        port = free_port()
        argv = uvicorn_argv("bare_starlette:app", port)
        with process(
            argv, work / "bare.log", {"PYTHONPATH": str(Path(__file__).resolve().parent)}, port
        ):
            bare = wrk(
                f"http://127.0.0.1:{port}{ROUTE}",
                connections=args.connections,
                seconds=args.seconds,
                headers=["Authorization: Bearer x", 'If-None-Match: "x"'],
            )
    rows.append(
        [
            "bare Starlette (baseline)",
            bare.requests_per_second,
            bare.p50_ms,
            bare.p99_ms,
            1.0,
            bare.errors,
        ]
    )
    for backend in args.backends.split(","):
        with temp_work(backend) as tmp, database(backend, Path(tmp)) as url:
            work = Path(tmp)
            settings = Settings(data_dir=work / "data", database_url=url)
            fleet = provision(settings, args.devices, sampled=args.sampled)
            port = free_port()
            with fleetcast_server(settings, work, port) as server:
                token = next(iter(fleet.tokens.values()))[1]
                idle = httpx.get(
                    f"http://127.0.0.1:{port}{ROUTE}", headers={"Authorization": f"Bearer {token}"}
                )
                assert idle.status_code == 200 and idle.json() == {"update": None}, idle.text
                script = token_script(
                    work, [t for _, t in fleet.tokens.values()], etag=idle.headers["etag"]
                )
                url_next = f"http://127.0.0.1:{port}{ROUTE}"
                wrk(url_next, connections=args.connections, seconds=3, script=script)  # warm-up
                result = wrk(
                    url_next, connections=args.connections, seconds=args.seconds, script=script
                )
                if args.profile:
                    import threading

                    found: list[list[tuple[str, float]]] = []

                    def profile(
                        pid: int = server.pid,
                        into: Path = work,
                        out: list[list[tuple[str, float]]] = found,
                    ) -> None:
                        out.append(py_spy_top(pid, args.seconds - 2, into))

                    spy = threading.Thread(target=profile)
                    spy.start()
                    wrk(url_next, connections=args.connections, seconds=args.seconds, script=script)
                    spy.join()
                    profiles[backend] = found[0] if found else []
        rows.append(
            [
                f"Fleetcast, {backend}",
                result.requests_per_second,
                result.p50_ms,
                result.p99_ms,
                result.requests_per_second / bare.requests_per_second,
                result.errors,
            ]
        )
    print(
        table(
            "Idle check-ins (GET /next, 304)",
            ["server", "requests/s", "p50 ms", "p99 ms", "vs bare", "errors"],
            rows,
        )
    )
    for backend, top in profiles.items():
        print(
            table(
                f"py-spy: share of samples with the function on the stack ({backend})",
                ["function", "%"],
                [[n, p] for n, p in top],
            )
        )


if __name__ == "__main__":
    main()
