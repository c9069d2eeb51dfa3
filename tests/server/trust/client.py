"""A real python-tuf client (``tuf.ngclient.Updater``) against the in-process app.

The Updater is synchronous; it runs in a worker thread, and its fetcher hands
each request back to the test's event loop, where the app runs, adding the
device's bearer token like the agent's fetcher does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, TargetFile
from tuf.ngclient import FetcherInterface, Updater

from tests.server.harness import BASE, SimDevice


class AppFetcher(FetcherInterface):
    """Fetches through the app's ASGI client with the device token; records the URLs."""

    def __init__(self, device: SimDevice, loop: asyncio.AbstractEventLoop) -> None:
        self.device = device
        self.loop = loop
        self.urls: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.urls.append(url)
        future = asyncio.run_coroutine_threadsafe(
            self.device.http.get(url, headers=self.device.headers), self.loop
        )
        response: httpx.Response = future.result(timeout=60)
        if response.status_code != 200:
            raise DownloadHTTPError(f"{url}: {response.status_code}", response.status_code)
        return iter([response.content])


class DeviceTufClient:
    """One repository's client of one device: trusted root, local metadata directory.

    Each :meth:`refresh` is a new ``Updater`` (one refresh each, as in python-tuf),
    the first from the shipped root, later ones from what the previous trusted.
    """

    def __init__(self, device: SimDevice, repo: str, trusted_root: bytes, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.url = f"{BASE}/api/device/v1/tuf/{repo}/"
        self.fetcher = AppFetcher(device, asyncio.get_running_loop())
        self._bootstrap: bytes | None = trusted_root
        self.updater: Updater | None = None

    async def refresh(self) -> None:
        self.updater = Updater(
            str(self.directory), self.url, fetcher=self.fetcher, bootstrap=self._bootstrap
        )
        self._bootstrap = None
        await asyncio.to_thread(self.updater.refresh)

    def trusted(self, role: str) -> Metadata[Any]:
        """What the client trusts now (ngclient keeps it in its metadata directory)."""
        return Metadata.from_file(str(self.directory / f"{role}.json"))

    async def target(self, path: str) -> TargetFile | None:
        assert self.updater is not None, "refresh first"
        return await asyncio.to_thread(self.updater.get_targetinfo, path)
