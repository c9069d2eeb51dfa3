"""Update modules: ``module`` payloads installed by handler executables.

A ``module`` payload names a handler in ``meta["handler"]``; the handler is
the executable ``<modules.dir>/<handler>`` on the device (a shell script is
fine: the protocol needs no JSON parser). Module payloads take part in the
in-place flow (:mod:`fleetcast.agent.inplace`) with ``files`` and ``script``
payloads: all of an artifact's payloads are installed, or none.

Protocol version 1 (``docs/update-modules.md`` has the full text)::

    <modules.dir>/<handler> <verb> <work-dir>

========== ==================================================================
verb       when, and what the handler must do
========== ==================================================================
stage      every payload of the artifact is downloaded and verified; check
           the payload, prepare what ``install`` needs. Must not change the
           running system. Failure: the update fails, nothing is rolled back.
install    make the payload live; keep whatever ``rollback`` needs in
           ``<work-dir>/tmp``. Failure: every started payload is rolled back.
commit     the health checks passed: drop the backups. Failure: the update
           is rolled back (``rollback`` is called on every payload).
rollback   undo ``install``, from whatever point it reached (it may have
           failed half way, or been cut by a power loss). Called in reverse
           order for every payload whose ``install`` was started.
========== ==================================================================

The work directory ``<state_dir>/modules/<payload>/`` holds ``payload``
(the verified content, read-only by convention), ``state.json`` (written
before every call: protocol, verb, artifact, payload with its ``meta``, and
the ``handler_state`` the handler returned last) and ``tmp/`` (the handler's
own, kept across calls and reboots until the update ends). A handler may
write ``result.json``: ``{"message": "...", "state": <any JSON>}``; the
message goes to the log tail and ``state`` is handed back as
``handler_state`` to the next call. The same facts are in the environment:
``FLEETCAST_MODULE_VERB``, ``FLEETCAST_MODULE_WORKDIR``,
``FLEETCAST_PAYLOAD_FILE``, ``FLEETCAST_PAYLOAD_NAME``, ``FLEETCAST_META_<KEY>``
(key upper-cased, other characters as ``_``) and the health-check variables
(``FLEETCAST_ARTIFACT_NAME``, ``FLEETCAST_ARTIFACT_VERSION``).

Exit status 0 is success; any other status, or running longer than
``modules.timeout`` (the process group is killed), is failure. Every verb
may be called again after a power cut, so each must be idempotent.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

from fleetcast.agent import durable
from fleetcast.agent.atomicfile import fsync_directory, write_atomic, write_new_file
from fleetcast.agent.health import run_command
from fleetcast.core.manifest import Manifest, Payload
from fleetcast.exceptions import DeviceStateError, IncompatibleError

PROTOCOL_VERSION: Final = 1
VERBS: Final = ("stage", "install", "commit", "rollback")
MODULES_DIR: Final = "modules"
_MAX_RESULT: Final = 64 * 1024
_COPY_CHUNK: Final = 64 * 1024


class _Readable(Protocol):
    def read(self, n: int = -1) -> bytes: ...


def check_handlers(manifest: Manifest, modules_dir: Path) -> None:
    """Refuse an artifact whose module handlers this device does not have.

    Raises:
        IncompatibleError: a handler is missing or not executable.
    """
    for payload in manifest.payloads:
        if payload.type != "module":
            continue
        handler = modules_dir / payload.meta["handler"]
        if not (handler.is_file() and os.access(handler, os.X_OK)):
            raise IncompatibleError(
                f"payload {payload.name!r} needs update module {payload.meta['handler']!r}, "
                f"which is not installed (no executable {handler})"
            )


def _meta_env(meta: Mapping[str, str]) -> dict[str, str]:
    return {
        "FLEETCAST_META_" + re.sub(r"[^A-Z0-9]", "_", key.upper()): value
        for key, value in meta.items()
    }


@dataclass(frozen=True)
class ModuleOutcome:
    """What one handler call did."""

    ok: bool
    log: tuple[str, ...]


@dataclass(frozen=True)
class ModuleTarget:
    """One ``module`` payload and its work directory."""

    payload: Payload
    work_dir: Path

    @property
    def name(self) -> str:
        return self.payload.name

    @property
    def handler(self) -> str:
        return self.payload.meta["handler"]

    @property
    def payload_file(self) -> Path:
        return self.work_dir / "payload"

    def stage(self, content: _Readable) -> None:
        """Write the payload's content to ``<work-dir>/payload`` and fsync it.

        Raises:
            DeviceStateError: the file cannot be written.
        """
        try:
            (self.work_dir / "tmp").mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                durable.unlink(self.payload_file)
            write_new_file(self.payload_file, content.read, mode=0o400, chunk=_COPY_CHUNK)
        except OSError as e:
            raise DeviceStateError(f"cannot write module payload {self.payload_file}: {e}") from e
        fsync_directory(self.work_dir)

    def _handler_state(self) -> Any:
        try:
            return json.loads((self.work_dir / "handler-state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def run(
        self,
        verb: str,
        *,
        modules_dir: Path,
        timeout: float,
        env: Mapping[str, str],
        artifact: tuple[str, str],
    ) -> ModuleOutcome:
        """Call the handler with ``verb`` (see the module docstring).

        Raises:
            DeviceStateError: the work directory cannot be written.
        """
        assert verb in VERBS
        what = f"module {self.handler} ({self.name}) {verb}"
        try:
            self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            (self.work_dir / "tmp").mkdir(mode=0o700, exist_ok=True)
            (self.work_dir / "result.json").unlink(missing_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot prepare {self.work_dir}: {e}") from e
        state = {
            "protocol": PROTOCOL_VERSION,
            "verb": verb,
            "artifact": {"name": artifact[0], "version": artifact[1]},
            "payload": self.payload.to_dict(),
            "handler_state": self._handler_state(),
        }
        write_atomic(self.work_dir / "state.json", json.dumps(state, indent=2).encode())
        full_env = {
            **env,
            **_meta_env(self.payload.meta),
            "FLEETCAST_MODULE_VERB": verb,
            "FLEETCAST_MODULE_WORKDIR": str(self.work_dir),
            "FLEETCAST_PAYLOAD_FILE": str(self.payload_file),
            "FLEETCAST_PAYLOAD_NAME": self.name,
        }
        argv = [str(modules_dir / self.handler), verb, str(self.work_dir)]
        code, output = run_command(argv, timeout=timeout, env=full_env)
        log = list(output)
        result = self._result(log)
        if result is not None:
            message = result.get("message")
            if isinstance(message, str) and message:
                log.append(f"  | {message[:500]}")
            if "state" in result:
                write_atomic(
                    self.work_dir / "handler-state.json", json.dumps(result["state"]).encode()
                )
        if code is None:
            return ModuleOutcome(False, (f"{what} timed out after {timeout:g}s", *log))
        if code != 0:
            return ModuleOutcome(False, (f"{what} failed (exit {code})", *log))
        return ModuleOutcome(True, (f"{what} done", *log))

    def _result(self, log: list[str]) -> dict[str, Any] | None:
        path = self.work_dir / "result.json"
        try:
            with path.open("rb") as fh:
                raw = fh.read(_MAX_RESULT + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.append(f"  | result.json unreadable: {e}")
            return None
        if len(raw) > _MAX_RESULT:
            log.append(f"  | result.json ignored: larger than {_MAX_RESULT} bytes")
            return None
        try:
            data = json.loads(raw)
        except ValueError as e:
            log.append(f"  | result.json ignored: not JSON ({e})")
            return None
        if not isinstance(data, dict):
            log.append("  | result.json ignored: not a JSON object")
            return None
        return data

    def clean(self) -> None:
        """Remove the work directory (the update is over).

        Raises:
            DeviceStateError: it cannot be removed.
        """
        try:
            shutil.rmtree(self.work_dir, ignore_errors=False)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise DeviceStateError(f"cannot remove {self.work_dir}: {e}") from e


__all__ = [
    "MODULES_DIR",
    "PROTOCOL_VERSION",
    "VERBS",
    "ModuleOutcome",
    "ModuleTarget",
    "check_handlers",
]
