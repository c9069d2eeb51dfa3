"""Run a real Fleetcast server (uvicorn) in a background thread on a free port."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import uvicorn

from fleetcast.exceptions import UsageError
from fleetcast.server import Settings, create_app, prepare


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class ServerThread:
    """A real HTTP server on loopback, for the demo and the end-to-end tests.

    ``admin_token`` is the token created on first start (None when the data
    directory already had one). With ``tls_cert`` and ``tls_key`` (PEM files)
    it serves HTTPS, for clients that insist on it (the Mender client).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise UsageError("give both tls_cert and tls_key, or neither")
        self.settings = settings
        self.host = host
        self.port = port or free_port(host)
        self.scheme = "https" if tls_cert else "http"
        self.admin_token = prepare(settings)
        config = uvicorn.Config(
            create_app(settings),
            host=host,
            port=self.port,
            log_level="warning",
            lifespan="on",
            ssl_certfile=str(tls_cert) if tls_cert else None,
            ssl_keyfile=str(tls_key) if tls_key else None,
            # A client killed mid-TLS leaves a connection that never closes cleanly:
            # stopping must not wait for it for long.
            timeout_graceful_shutdown=3,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name="fleetcast-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start serving; return once the server accepts connections.

        Raises:
            UsageError: the server did not come up within ``timeout``.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise UsageError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
