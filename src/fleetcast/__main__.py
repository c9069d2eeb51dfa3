"""``python -m fleetcast``: the same as the ``fleetcast`` command."""

from __future__ import annotations

from fleetcast.cli import main

main()
