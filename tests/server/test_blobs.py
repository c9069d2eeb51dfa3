"""The local blob store: content-addressed, atomic, size-capped."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetcast.server.blobs import LocalBlobStore
from fleetcast.server.errors import TooLargeError


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_put_is_content_addressed(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    first = await store.put(_chunks(b"hello ", b"world"), max_size=100)
    assert first.key == hashlib.sha256(b"hello world").hexdigest() == first.sha256
    assert first.size == 11 and first.created
    assert store.path(first.key).read_bytes() == b"hello world"
    again = await store.put(_chunks(b"hello world"), max_size=100)
    assert again.key == first.key and not again.created
    assert await store.exists(first.key)
    await store.delete(first.key)
    assert not await store.exists(first.key)
    await store.delete(first.key)  # deleting twice is fine
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


async def test_too_large_leaves_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    with pytest.raises(TooLargeError):
        await store.put(_chunks(b"x" * 60, b"y" * 60), max_size=100)
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert files == []


def test_keys_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        LocalBlobStore(tmp_path).path("../../etc/passwd")
