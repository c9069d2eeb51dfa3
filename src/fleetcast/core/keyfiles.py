"""Key files named in configuration or on a command line, read and parsed with one error style."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from fleetcast.exceptions import UsageError, ValidationError

K = TypeVar("K")


def load_key_files(
    paths: Iterable[Path], parse: Callable[[bytes], K], *, what: str, kind: str, hint: str = ""
) -> list[K]:
    """Read each file and parse it with ``parse`` (a PEM parser of ``fleetcast.core``).

    Args:
        what: how the files are named to the user ("trusted key", "--encrypt-to").
        kind: what each must be ("an Ed25519 public key").
        hint: added to the message of a file that is not ``kind``.

    Raises:
        UsageError: a file cannot be read, or is not ``kind``.
    """
    keys = []
    for path in paths:
        try:
            keys.append(parse(path.read_bytes()))
        except OSError as e:
            raise UsageError(f"cannot read {what} {path}: {e.strerror or e}") from e
        except ValidationError as e:
            raise UsageError(f"{what} {path} is not {kind}{hint}: {e}") from e
    return keys


__all__ = ["load_key_files"]
