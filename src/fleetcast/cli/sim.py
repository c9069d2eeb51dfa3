"""``fleetcast sim``: a virtual fleet in one process against a running server.

For sizing a deployment and for the benchmarks: ``--devices N`` virtual
devices (:mod:`fleetcast.sim.virtual`) speak the real device API, with a
configurable mix of unhealthy, flaky, slow and push-driven devices, and a
table of what they did is printed every few seconds and at the end.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from fleetcast.cli._output import console

if TYPE_CHECKING:
    from fleetcast.sim.virtual import FleetStats


def _table(stats: FleetStats, elapsed: float) -> Table:
    table = Table(title=f"virtual fleet after {elapsed:.0f} s")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in (
        "checkins",
        "not_modified",
        "offers",
        "successes",
        "failures",
        "errors",
        "push_notices",
        "bytes_downloaded",
    ):
        table.add_row(name.replace("_", " "), f"{getattr(stats, name):,}")
    table.add_row("check-ins per second", f"{stats.checkins / max(elapsed, 1e-9):,.0f}")
    return table


def sim(
    server_url: Annotated[str, typer.Option(help="The server (or the proxy in front of it).")],
    devices: Annotated[int, typer.Option(min=1, help="How many virtual devices.")] = 100,
    enrollment_token: Annotated[
        str | None, typer.Option(help="Enrollment token that admits the devices on first contact.")
    ] = None,
    device_type: Annotated[str, typer.Option(help="Their device type.")] = "acme-gw",
    artifact_name: Annotated[str, typer.Option(help="What they run at first.")] = "acme-fw",
    artifact_version: Annotated[str, typer.Option(help="Its version.")] = "1.0.0",
    unhealthy: Annotated[
        float, typer.Option(min=0, max=1, help="Share failing the health check (roll back).")
    ] = 0.0,
    offline: Annotated[
        float, typer.Option(min=0, max=1, help="Share going offline mid-download (then resume).")
    ] = 0.0,
    slow: Annotated[
        float, typer.Option(min=0, max=1, help="Share with slow downloads and installs.")
    ] = 0.0,
    push: Annotated[
        float, typer.Option(min=0, max=1, help="Share listening on MQTT instead of long-polling.")
    ] = 0.0,
    mqtt_url: Annotated[
        str | None, typer.Option(help="Broker of the push devices, mqtt://host[:port].")
    ] = None,
    mqtt_topic_prefix: Annotated[
        str, typer.Option(help="The server's topic prefix.")
    ] = "fleetcast",
    long_poll: Annotated[int, typer.Option(min=0, max=3600, help="Long-poll wait, seconds.")] = 25,
    poll_interval: Annotated[
        float, typer.Option(min=0, help="Seconds between two check-ins of one device.")
    ] = 30.0,
    connections: Annotated[
        int, typer.Option(min=1, help="Most HTTP connections at once (long-polls hold one each).")
    ] = 512,
    duration: Annotated[float, typer.Option(min=1, help="Stop after this many seconds.")] = 60.0,
    seed: Annotated[str, typer.Option(help="Device keys and behaviours derive from it.")] = (
        "fleetcast-sim"
    ),
) -> None:
    """Run a virtual fleet of --devices devices in this process (asyncio) for --duration seconds."""
    from fleetcast.sim.virtual import FleetMix, VirtualFleet

    fleet = VirtualFleet(
        server_url,
        count=devices,
        device_type=device_type,
        artifact_name=artifact_name,
        artifact_version=artifact_version,
        mix=FleetMix(unhealthy=unhealthy, offline=offline, slow=slow, push=push),
        enrollment_token=enrollment_token,
        long_poll=long_poll,
        poll_interval=poll_interval,
        mqtt_url=mqtt_url,
        mqtt_topic_prefix=mqtt_topic_prefix,
        connections=connections,
        seed=seed,
    )
    started = time.monotonic()

    async def main() -> None:
        runner = asyncio.create_task(fleet.run(duration=duration))
        while not runner.done():
            await asyncio.wait({runner}, timeout=10)
            if not runner.done():
                console.print(_table(fleet.stats, time.monotonic() - started))
        await runner

    asyncio.run(main())
    console.print(_table(fleet.stats, time.monotonic() - started))
