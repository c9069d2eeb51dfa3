"""``python3 -m fleetcast.agent --config /etc/fleetcast/agent.toml``: the agent on a device.

The same loop as ``fleetcast agent``, without the operator CLI's dependencies
(typer, rich): the device needs only the standard library, httpx,
cryptography and pyzstd. SIGTERM and SIGINT stop the agent after its current
step; everything else it needs to resume is in its journal. Exit status: 0
when stopped, 2 for a bad configuration, 3 when the server rejected the
device, 1 when the device cannot go on (bootloader or slot trouble).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from fleetcast.agent.config import AgentConfig
from fleetcast.agent.results import StepResult
from fleetcast.agent.runner import run_agent
from fleetcast.exceptions import DeviceStateError, UsageError, ValidationError


def main(argv: list[str] | None = None) -> int:
    """Run the agent until it is stopped; return the exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m fleetcast.agent", description=__doc__)
    parser.add_argument("--config", "-c", type=Path, required=True, help="agent.toml")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    # journald adds its own timestamps; keep the lines short.
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        config = AgentConfig.load(args.config)
    except ValidationError as e:
        print(f"fleetcast-agent: {e}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        result = run_agent(config, stop)
    except UsageError as e:
        print(f"fleetcast-agent: {e}", file=sys.stderr)
        return 2
    except DeviceStateError as e:
        print(f"fleetcast-agent: {e}", file=sys.stderr)
        return 1
    return 3 if result is StepResult.REJECTED else 0


if __name__ == "__main__":
    sys.exit(main())
