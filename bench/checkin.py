"""Benchmark 1: idle check-in throughput and latency with a million registered devices.

    .venv/bin/python bench/checkin.py [--devices 1000000] [--seconds 15] [--rounds 3]

For SQLite and PostgreSQL: bulk-load the devices (SQLAlchemy core, not the
API), start the server with uvicorn (one worker), let every sampled device
poll once (its first poll reads the database, as after a restart), then
hammer ``GET /api/device/v1/next`` with wrk (one thread, a separate
process), each request carrying a random sampled device's token and the
"nothing to do" ETag, as an idle agent sends it (answer: 304). The baseline
is a bare Starlette endpoint answering the same route with a constant 304,
served by the same uvicorn command line, up for the whole run and measured
alternately with Fleetcast (the machine is shared: each ratio compares runs
seconds apart; the median is the result). Target: Fleetcast at least half
the bare endpoint's throughput. ``--profile`` adds a py-spy profile of the
server during one more Fleetcast run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import threading
import time
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
from fleetcast.sim._http import HttpError, Pool

ROUTE = "/api/device/v1/next"


async def warm_up(base_url: str, tokens: list[str], connections: int = 32) -> int:
    """One idle poll per token (bounded: each request times out); return the 304/200 count."""
    pool = Pool(base_url, connections=connections, timeout=60)
    queue = iter(tokens)
    done = 0

    async def worker() -> None:
        nonlocal done
        for token in queue:
            for attempt in range(3):  # a keep-alive connection may be closed under us
                try:
                    reply = await pool.request(
                        "GET", ROUTE, headers={"Authorization": f"Bearer {token}"}
                    )
                except HttpError:
                    if attempt == 2:
                        raise
                    continue
                done += reply.status_code == 200
                break

    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    finally:
        await pool.close()
    return done


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--sampled", type=int, default=20_000, help="devices whose tokens wrk uses")
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--rounds", type=int, default=3, help="bare/Fleetcast run pairs")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(
        f"{args.devices:,} devices, wrk 1 thread x {args.connections} connections,"
        f" {args.seconds} s per run"
    )
    rows: list[list[object]] = []
    profiles = {}
    bare_headers = ["Authorization: Bearer x", 'If-None-Match: "x"']
    with contextlib.ExitStack() as stack:
        # The baseline stays up for the whole run and is measured alternately with
        # Fleetcast (bare, Fleetcast, bare, ...): the machine is shared, so each
        # ratio compares runs seconds apart, and the median ratio is reported.
        bare_work = Path(stack.enter_context(temp_work("baseline")))
        bare_port = free_port()
        stack.enter_context(
            process(
                uvicorn_argv("bare_starlette:app", bare_port),
                bare_work / "bare.log",
                {"PYTHONPATH": str(Path(__file__).resolve().parent)},
                bare_port,
            )
        )
        url_bare = f"http://127.0.0.1:{bare_port}{ROUTE}"
        wrk(url_bare, connections=args.connections, seconds=3, headers=bare_headers)
        for backend in args.backends.split(","):
            with temp_work(backend) as tmp, database(backend, Path(tmp)) as url:
                work = Path(tmp)
                # The idle memory's TTL is only a safety net against lost notifications
                # (ADR 0007); it must outlast the warm-up and the runs, as in production
                # it must outlast the devices' poll interval, or no poll would hit it.
                settings = Settings(
                    data_dir=work / "data",
                    database_url=url,
                    idle_cache_ttl=3600,
                    idle_cache_size=max(args.sampled, 200_000),
                )
                started = time.monotonic()
                fleet = provision(settings, args.devices, sampled=args.sampled)
                print(f"{backend}: {args.devices:,} devices in {time.monotonic() - started:.0f} s")
                port = free_port()
                with fleetcast_server(settings, work, port) as server:
                    tokens = [t for _, t in fleet.tokens.values()]
                    idle = httpx.get(
                        f"http://127.0.0.1:{port}{ROUTE}",
                        headers={"Authorization": f"Bearer {tokens[0]}"},
                    )
                    assert idle.status_code == 200 and idle.json() == {"update": None}, idle.text
                    script = token_script(work, tokens, etag=idle.headers["etag"])
                    url_next = f"http://127.0.0.1:{port}{ROUTE}"
                    # Warm-up: every sampled device polls once (its first poll reads the
                    # database, as after a server start), then wrk settles.
                    started = time.monotonic()
                    warmed = asyncio.run(warm_up(f"http://127.0.0.1:{port}", tokens))
                    print(
                        f"{backend}: warm-up, {warmed:,} first polls in"
                        f" {time.monotonic() - started:.0f} s"
                    )
                    wrk(url_next, connections=args.connections, seconds=3, script=script)
                    for round_ in range(1, args.rounds + 1):
                        bare = wrk(
                            url_bare,
                            connections=args.connections,
                            seconds=args.seconds,
                            headers=bare_headers,
                        )
                        result = wrk(
                            url_next,
                            connections=args.connections,
                            seconds=args.seconds,
                            script=script,
                        )
                        ratio = result.requests_per_second / bare.requests_per_second
                        rows.append(
                            [
                                backend,
                                round_,
                                bare.requests_per_second,
                                bare.p50_ms,
                                bare.p99_ms,
                                result.requests_per_second,
                                result.p50_ms,
                                result.p99_ms,
                                ratio,
                                result.errors,
                            ]
                        )
                    if args.profile:
                        found: list[list[tuple[str, float]]] = []

                        def profile(
                            pid: int = server.pid,
                            into: Path = work,
                            out: list[list[tuple[str, float]]] = found,
                        ) -> None:
                            out.append(py_spy_top(pid, args.seconds - 2, into))

                        spy = threading.Thread(target=profile)
                        spy.start()
                        wrk(
                            url_next,
                            connections=args.connections,
                            seconds=args.seconds,
                            script=script,
                        )
                        spy.join()
                        profiles[backend] = found[0] if found else []
    print(
        table(
            "Idle check-ins (GET /next, 304), bare Starlette and Fleetcast alternately",
            [
                "backend",
                "round",
                "bare req/s",
                "p50 ms",
                "p99 ms",
                "Fleetcast req/s",
                "p50 ms",
                "p99 ms",
                "vs bare",
                "errors",
            ],
            rows,
        )
    )
    summary = []
    for backend in args.backends.split(","):
        ratios = [float(str(r[8])) for r in rows if r[0] == backend]
        if ratios:
            summary.append([backend, statistics.median(ratios), min(ratios), max(ratios)])
    print(table("Fleetcast / bare Starlette", ["backend", "median", "min", "max"], summary))
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
