"""Which patch engines this Python can apply, without loading any of them.

Separate from ``_engines`` so the agent can state its capability in every
inventory without importing pyzstd or the delta machinery while idle.
"""

from __future__ import annotations

import importlib.util


def available_engines() -> tuple[str, ...]:
    """The engines this Python can apply (``zstd`` always; ``hdiffpatch`` if installed)."""
    if importlib.util.find_spec("hdiffpatch") is not None:
        return ("hdiffpatch", "zstd")
    return ("zstd",)
