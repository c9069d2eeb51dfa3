"""Image pairs for delta tests: small, deterministic, shaped like real updates."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import pytest


def noise(seed: int, size: int) -> bytes:
    """Incompressible bytes (a stand-in for compressed or executable content)."""
    return random.Random(seed).randbytes(size)


@dataclass
class Pair:
    old: Path
    new: Path

    @property
    def new_bytes(self) -> bytes:
        return self.new.read_bytes()


def make_pair(directory: Path, old: bytes, new: bytes) -> Pair:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "old.img").write_bytes(old)
    (directory / "new.img").write_bytes(new)
    return Pair(directory / "old.img", directory / "new.img")


def shifted_update(size: int = 1024 * 1024) -> tuple[bytes, bytes]:
    """Like a tar with one member grown: everything behind it moves by 2.5 KiB,
    and a few blocks elsewhere change."""
    old = noise(1, size)
    member = noise(2, 5 * 512)
    cut = size // 3 // 512 * 512
    new = bytearray(old[:cut] + member + old[cut:])
    for offset in (4096 * 10, size // 2, size - 8192):
        new[offset : offset + 300] = noise(offset, 300)
    return old, bytes(new)


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    old, new = shifted_update()
    return make_pair(tmp_path / "pair", old, new)


def repeated_update(copies: int = 4, spacing: int = 256 * 1024) -> tuple[bytes, bytes]:
    """Like a root file system holding the same tree several times (``/opt/copyN``):
    one 48 KiB file, ``spacing`` bytes apart ``copies`` times, between unchanged
    data; the update rewrites a third of every copy of the file the same way."""
    file_old = noise(10, 48 * 1024)
    file_new = file_old[:8192] + noise(11, 16 * 1024) + file_old[8192 + 16 * 1024 :]
    filler = [noise(20 + i, spacing - len(file_old)) for i in range(copies)]
    old = b"".join(file_old + f for f in filler)
    new = b"".join(file_new + f for f in filler)
    return old, new
