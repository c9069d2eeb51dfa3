"""Lazy package exports (PEP 562): a public name is imported from its module on first use.

The device side keeps its idle memory small (``docs/agent.md``): importing
``fleetcast.agent`` or ``fleetcast.delta`` must not import the update
machinery (artifact reader, zstd, installers) that they re-export.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(
    package: str, exports: Mapping[str, str], public: Iterable[str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``.

    Args:
        package: the package's ``__name__``.
        exports: each lazily exported name and the submodule that defines it.
        public: the package's ``__all__``.
    """
    names = frozenset(public)

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *names})

    return __getattr__, __dir__
