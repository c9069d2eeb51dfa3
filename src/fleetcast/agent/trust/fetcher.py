"""python-tuf's network interface over httpx, with the agent's TLS settings and token.

:class:`HttpxFetcher` implements ``tuf.ngclient.FetcherInterface``: one GET
per metadata file (or target), streamed in bounded chunks; the ``Updater``
counts the bytes and stops at the signed (or configured maximum) length, so
an endless answer costs at most one chunk more than allowed. Every httpx
failure is translated here into python-tuf's download errors (which the
child process turns into the agent's ``TransportError``):

- a non-200 answer -> ``DownloadHTTPError`` with its status (the ``Updater``
  reads 403/404 on ``N+1.root.json`` as "no newer root");
- a timeout -> ``SlowRetrievalError``;
- any other httpx error -> ``DownloadError``.

Redirects are not followed: metadata comes from the Fleetcast server itself,
and the bearer token must never travel to another host.

The agent's child process (:mod:`fleetcast.agent.trust.__main__`) and the
conformance CLI (:mod:`fleetcast.agent.trust.conformance`) both use this
class; only the token differs (the conformance server wants none).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
from tuf.api import exceptions
from tuf.ngclient.fetcher import FetcherInterface

from fleetcast.agent.client import pinned_tls_context

#: Bytes per read: also the most an endless answer can overshoot a bound.
CHUNK: Final = 64 * 1024
USER_AGENT: Final = "fleetcast-agent-tuf"


class HttpxFetcher(FetcherInterface):
    """Fetch TUF metadata and targets over httpx.

    Args:
        token: the device's bearer token (``None``: send no ``Authorization``).
        ca_bundle: the pinned CA bundle for ``https`` (``None``: the system store).
        timeout: seconds for connecting and between two reads.
        transport: an httpx transport (tests).

    Raises:
        UsageError: ``ca_bundle`` holds no usable certificate.
    """

    def __init__(
        self,
        *,
        token: str | None,
        ca_bundle: Path | None,
        timeout: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            verify=pinned_tls_context(ca_bundle),
            timeout=timeout,
            follow_redirects=False,
            headers=headers,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        """Start a GET of ``url``; the body is read lazily, chunk by chunk.

        Raises:
            DownloadHTTPError: the answer is not 200.
            SlowRetrievalError: the server did not answer in time.
            DownloadError: any other network failure.
        """
        try:
            response = self._http.send(self._http.build_request("GET", url), stream=True)
        except httpx.TimeoutException as e:
            raise exceptions.SlowRetrievalError(f"GET {url}: timed out") from e
        except httpx.HTTPError as e:
            raise exceptions.DownloadError(f"GET {url}: {type(e).__name__}: {e}") from e
        if response.status_code != 200:
            response.close()
            raise exceptions.DownloadHTTPError(
                f"GET {url}: server answered {response.status_code}", response.status_code
            )
        return self._chunks(url, response)

    @staticmethod
    def _chunks(url: str, response: httpx.Response) -> Iterator[bytes]:
        # Errors while reading the body happen outside FetcherInterface.fetch(),
        # which only wraps _fetch() itself: translate them here too.
        try:
            yield from response.iter_bytes(CHUNK)
        except httpx.TimeoutException as e:
            raise exceptions.SlowRetrievalError(f"GET {url}: timed out while reading") from e
        except httpx.HTTPError as e:
            raise exceptions.DownloadError(f"GET {url}: reading failed: {e}") from e
        finally:
            response.close()


__all__ = ["CHUNK", "USER_AGENT", "HttpxFetcher"]
