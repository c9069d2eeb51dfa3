"""A small client for the management API, used by the CLI, the demo and the tests.

Every httpx failure is translated here: transport problems become
``TransportError``, error responses become ``ApiError`` carrying the server's
``code`` and ``message`` from the one JSON error shape.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from fleetcast.exceptions import ApiError, TransportError


class ManagementClient:
    """Talks to ``/api/v1`` with an admin bearer token."""

    def __init__(self, url: str, token: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON body (None for 204).

        Raises:
            ApiError: the server refused the request.
            TransportError: the server could not be reached.
        """
        try:
            response = self._http.request(method, "/api/v1" + path, **kwargs)
        except httpx.HTTPError as e:
            raise TransportError(f"cannot reach the server at {self._http.base_url}: {e}") from e
        if response.status_code >= 400:
            raise _api_error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as e:
            raise ApiError(
                f"server sent a non-JSON answer to {method} {path}",
                status_code=response.status_code,
                code="bad_response",
            ) from e

    def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def upload_artifact(self, path: Path, params: dict[str, Any] | None = None) -> Any:
        """Stream an artifact file to the server (``params``: the upload's query).

        Raises:
            ApiError: the server refused the artifact.
            TransportError: the server could not be reached.
        """

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as fh:
                while block := fh.read(1024 * 1024):
                    yield block

        return self.request(
            "POST",
            "/artifacts",
            content=chunks(),
            params=params,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(path.stat().st_size),
            },
        )


def _api_error(response: httpx.Response) -> ApiError:
    code, message = "http_error", f"HTTP {response.status_code}"
    try:
        body = response.json()
        error = body["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        pass
    return ApiError(message, status_code=response.status_code, code=code)
