"""``python -m fleetcast.agent.trust``: the short-lived TUF child process of the agent.

Reads one :class:`~fleetcast.agent.trust.protocol.TrustRequest` (JSON, at
most :data:`~fleetcast.agent.trust.protocol.MAX_MESSAGE` bytes) from stdin,
runs :func:`~fleetcast.agent.trust.verify.verify`, prints one
:class:`~fleetcast.agent.trust.protocol.TrustVerdict` line on stdout and
exits 0. Logs go to stderr. Exit status 2: the request itself was unusable
(a bug in the agent, never the repository's doing).

It exists so that the agent's long-running process never imports ``tuf``,
``securesystemslib`` or ``urllib3`` (about 12 MB of resident memory): they
live only as long as one check (docs/agent.md, idle RSS target).
"""

from __future__ import annotations

import json
import logging
import sys

from fleetcast.agent.trust.protocol import MAX_MESSAGE, TrustRequest
from fleetcast.agent.trust.verify import verdict_json, verify
from fleetcast.exceptions import InvalidDataError


def main() -> int:
    """Answer one request; return the exit status."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raw = sys.stdin.buffer.read(MAX_MESSAGE + 1)
    if len(raw) > MAX_MESSAGE:
        print(f"trust request larger than {MAX_MESSAGE} bytes", file=sys.stderr)
        return 2
    try:
        request = TrustRequest.from_dict(json.loads(raw))
    except (ValueError, RecursionError, InvalidDataError) as e:
        print(f"unusable trust request: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(verdict_json(verify(request)) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
