"""The device side of the native device API (``docs/device-api.md``), over httpx.

:class:`DeviceClient` is the only module of the agent that knows HTTP. Every
httpx exception is translated here, at the boundary, into the Fleetcast tree:

- connection, timeout and protocol failures -> :class:`TransportError`
  (retried with exponential backoff and jitter, at most ``limits.max_retries``
  attempts per call);
- a non-2xx answer -> :class:`ServerResponseError` carrying ``status_code``
  and the ``code`` of the JSON error shape (5xx and 429 are retried, other
  4xx are not: asking again will not change the answer);
- an invalid server URL -> :class:`UsageError`;
- an answer larger than its limit, or not the documented JSON ->
  :class:`ValidationError`.

Authentication is lazy: the first call that needs a token signs an
``AuthRequest`` (ed25519 over the exact body bytes, header
``X-Fleetcast-Signature``). Tokens are short-lived: when less than a tenth of
a token's lifetime is left, the next call signs in again first (the old token
stays valid until it expires, so a failed renewal costs nothing). A 401
``unauthorized`` (expired token) still triggers one re-authentication and a
retry. ``device_pending`` and ``device_rejected`` are raised to the runner,
which waits or stops. A 429 ``rate_limited`` (or a 503) is retried no sooner
than its ``Retry-After`` says (at most ``limits.backoff_cap``).

TLS: an ``https`` server is verified against ``ca_bundle`` when the
configuration names one (a CA bundle or the server's own certificate: that
and nothing else is trusted), otherwise against the system's trust store. A
certificate that does not verify is a :class:`TransportError` saying so.

:class:`HttpByteSource` serves artifact downloads with ``Range: bytes=N-``
and ``If-Range`` so an interrupted download resumes, even after a reboot. A
download may be redirected (a server with S3 storage answers with a
presigned URL); only downloads follow redirects, keeping their ``Range`` and
dropping the bearer token.
"""

from __future__ import annotations

import json
import os
import random
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent.config import AgentConfig
from fleetcast.core.signing import public_key_to_pem

if TYPE_CHECKING:
    # Types only: the install machinery loads when an update starts, not at idle.
    from fleetcast.agent.install import ByteSource
from fleetcast.core.wire import (
    AuthRequest,
    AuthResponse,
    DeltaOffer,
    Inventory,
    StatusReport,
    UpdateOffer,
)
from fleetcast.exceptions import (
    ServerResponseError,
    TransportError,
    UsageError,
    ValidationError,
)

API_PREFIX: Final = "/api/device/v1"
SIGNATURE_HEADER: Final = "X-Fleetcast-Signature"
_RETRY_STATUS: Final = frozenset({429, 500, 502, 503, 504})
_REDIRECT_STATUS: Final = frozenset({301, 302, 303, 307, 308})
#: Redirects a download may take (the server sends one, to a presigned URL).
_MAX_REDIRECTS: Final = 3
#: Sign in again when less than this fraction of the token's lifetime is left.
RENEW_FRACTION: Final = 0.1


@dataclass(frozen=True)
class NextUpdate:
    """The answer to ``GET /next``.

    Attributes:
        offer: the update to install, or ``None`` (nothing to do, or not modified).
        etag: the answer's ETag, for the next ``If-None-Match``.
        not_modified: the server answered 304 (same answer as ``etag``).
    """

    offer: UpdateOffer | None
    etag: str | None
    not_modified: bool = False


class DeviceApi(Protocol):
    """What the runner needs from the server; :class:`DeviceClient` implements it."""

    def authenticate(self) -> AuthResponse: ...

    def send_inventory(self, inventory: Inventory) -> None: ...

    def next_update(self, *, wait: int, etag: str | None) -> NextUpdate: ...

    def report_status(self, deployment_id: str, report: StatusReport) -> None: ...

    def artifact_source(self, offer: UpdateOffer) -> ByteSource: ...

    def delta_source(self, delta: DeltaOffer) -> ByteSource: ...

    def close(self) -> None: ...


@runtime_checkable
class TrustApi(Protocol):
    """The device-API calls of TUF mode (ADR 0008); :class:`DeviceClient` implements them."""

    device_id: str | None

    def bearer_token(self) -> str: ...

    def tuf_nonce(self) -> str: ...

    def send_version_report(self, report: dict[str, Any]) -> None: ...


def backoff_delay(attempt: int, *, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Exponential backoff with jitter: ``min(cap, base * 2**(attempt-1))``, times 0.5..1.

    The jitter keeps a fleet that lost its server at the same moment from
    hammering it in lockstep when it comes back.
    """
    return float(min(cap, base * 2.0 ** max(0, attempt - 1)) * (0.5 + rng() / 2))


def tls_context(config: AgentConfig) -> ssl.SSLContext:
    """The TLS verification the agent uses: ``ca_bundle`` if set, else the system's store.

    A pinned file may hold a CA or the server's own certificate: partial
    chains are accepted, so a leaf certificate in the bundle is a trust anchor.

    Raises:
        UsageError: ``ca_bundle`` is missing or holds no certificate.
    """
    return pinned_tls_context(config.ca_bundle)


def pinned_tls_context(ca_bundle: Path | None) -> ssl.SSLContext:
    """:func:`tls_context` for a ``ca_bundle`` alone (the TUF child process has no config).

    Raises:
        UsageError: ``ca_bundle`` is missing or holds no certificate.
    """
    if ca_bundle is None:
        return system_tls_context()
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as e:
        raise UsageError(f"ca_bundle {ca_bundle}: no usable certificate ({e})") from e
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


_HASHED_NAME: Final = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")


def system_tls_context() -> ssl.SSLContext:
    """Verification against the system's trust store, loaded lazily when possible.

    OpenSSL parses a CA bundle *file* whole into memory (about 2.5 MB for
    Debian's), but looks certificates up one at a time in a hashed CA
    *directory* (``/etc/ssl/certs``). Both hold the same trust store, so the
    directory is used when it is hashed and ``SSL_CERT_FILE`` does not name a
    file instead: it keeps the idle agent small (docs/agent.md).
    """
    paths = ssl.get_default_verify_paths()
    capath = paths.capath
    if capath and not os.environ.get(paths.openssl_cafile_env) and _is_hashed_dir(capath):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies peer and host name
        context.load_verify_locations(capath=capath)
        return context
    return ssl.create_default_context()


def _is_hashed_dir(path: str) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(_HASHED_NAME.match(entry.name) for entry in entries)
    except OSError:
        return False


def _cert_error(error: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure behind a connection error (httpx wraps it twice)."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None or isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The ``Retry-After`` of an answer in seconds (the delta-seconds form), or None."""
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _error_from(response: httpx.Response, body: bytes, what: str) -> ServerResponseError:
    code: str | None = None
    message = body[:200].decode("utf-8", errors="replace")
    try:
        error = json.loads(body)["error"]
        code = error["code"] if isinstance(error.get("code"), str) else None
        message = str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        pass
    return ServerResponseError(
        f"{what}: server answered {response.status_code}"
        + (f" {code}" if code else "")
        + (f": {message}" if message else ""),
        status_code=response.status_code,
        code=code,
    )


class DeviceClient:
    """A device's connection to the Fleetcast server.

    Args:
        config: the agent configuration (server URL, identity, limits).
        private_key: the device key (see :mod:`fleetcast.agent.identity`).
        transport: an httpx transport (tests pass ``httpx.MockTransport``).
        sleep: how to wait between retries (tests pass a no-op).
        clock: the wall clock, for the signed timestamp.
        rng: random numbers in [0, 1) for backoff jitter.
    """

    def __init__(
        self,
        config: AgentConfig,
        private_key: Ed25519PrivateKey,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.limits = config.limits
        self._key = private_key
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self.device_id: str | None = None
        self._token: str | None = None
        #: Wall-clock time from which the token is renewed, and when it expires.
        self._renew_at = 0.0
        self._expires_at = 0.0
        # Also for an http:// server: redirects and presigned download URLs may be https.
        verify = tls_context(config)
        try:
            self._http = httpx.Client(
                base_url=config.server_url,
                transport=transport,
                verify=verify,
                timeout=config.limits.request_timeout,
                follow_redirects=False,
            )
        except httpx.InvalidURL as e:
            raise UsageError(f"server_url {config.server_url!r} is invalid: {e}") from e

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ plumbing

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{API_PREFIX}{path}"

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        content: bytes | None,
        timeout: float,
        stream: bool = False,
    ) -> httpx.Response:
        """One HTTP exchange; httpx exceptions are translated here and nowhere else."""
        what = f"{method} {url}"
        try:
            request = self._http.build_request(
                method, url, headers=headers, content=content, timeout=timeout
            )
            return self._http.send(request, stream=stream)
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
            # A configuration error, not a network one: retrying cannot help.
            raise UsageError(f"{what}: invalid URL: {e}") from e
        except httpx.TimeoutException as e:
            raise TransportError(f"{what}: timed out ({type(e).__name__})") from e
        except httpx.ConnectError as e:
            bad_cert = _cert_error(e)
            if bad_cert is not None:
                trusted = self.config.ca_bundle or "the system trust store"
                raise TransportError(
                    f"{what}: the server's TLS certificate does not verify against "
                    f"{trusted}: {bad_cert.verify_message}"
                ) from e
            raise TransportError(f"{what}: {type(e).__name__}: {e}") from e
        except httpx.HTTPError as e:
            raise TransportError(f"{what}: {type(e).__name__}: {e}") from e

    def _read_body(self, response: httpx.Response, limit: int, what: str) -> bytes:
        body = bytearray()
        try:
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise ValidationError(f"{what}: answer is larger than {limit} bytes")
        except httpx.HTTPError as e:
            raise TransportError(f"{what}: reading the answer failed: {e}") from e
        finally:
            response.close()
        return bytes(body)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        limit: int | None = None,
        authenticated: bool = True,
        ok: tuple[int, ...] = (200, 204),
    ) -> tuple[httpx.Response, bytes]:
        """Send a request with retries, re-authentication and a bounded answer.

        Raises:
            TransportError: every attempt failed to reach the server.
            ServerResponseError: the server refused (4xx) or kept failing (5xx).
            ValidationError: the answer is larger than ``limit``.
        """
        url = self._url(path)
        what = f"{method} {url}"
        content = None if body is None else json.dumps(body).encode()
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            try:
                all_headers = {"Content-Type": "application/json"} if content else {}
                all_headers.update(headers or {})
                if authenticated:
                    all_headers["Authorization"] = f"Bearer {self._ensure_token()}"
                response = self._send(
                    method,
                    url,
                    headers=all_headers,
                    content=content,
                    timeout=timeout or self.limits.request_timeout,
                    stream=True,
                )
                data = self._read_body(response, limit or self.limits.max_response_size, what)
            except ServerResponseError as e:
                if e.status_code not in _RETRY_STATUS or attempt >= self.limits.max_retries:
                    raise
                self._backoff(attempt)
                continue
            except TransportError:
                if attempt >= self.limits.max_retries:
                    raise
                self._backoff(attempt)
                continue
            if response.status_code in ok:
                return response, data
            error = _error_from(response, data, what)
            if (
                response.status_code == 401
                and error.code == "unauthorized"
                and authenticated
                and not reauthenticated
            ):
                # The token expired or the server restarted: sign in again, once.
                self._token = None
                reauthenticated = True
                attempt -= 1
                continue
            if response.status_code in _RETRY_STATUS and attempt < self.limits.max_retries:
                self._backoff(attempt, retry_after_seconds(response))
                continue
            raise error

    def _backoff(self, attempt: int, retry_after: float | None = None) -> None:
        delay = backoff_delay(
            attempt, base=self.limits.backoff_base, cap=self.limits.backoff_cap, rng=self._rng
        )
        if retry_after is not None:
            # The server said when: not sooner, but never longer than the cap.
            delay = max(delay, min(retry_after, self.limits.backoff_cap))
        self._sleep(delay)

    def _ensure_token(self) -> str:
        if self._token is None:
            self.authenticate()
        elif self._clock() >= self._renew_at:
            self._renew()
        assert self._token is not None
        return self._token

    def _renew(self) -> None:
        """Sign in again before the token expires; keep the old one if that fails meanwhile."""
        try:
            self.authenticate()
        except (TransportError, ServerResponseError) as e:
            retryable = isinstance(e, TransportError) or (
                isinstance(e, ServerResponseError) and e.status_code in _RETRY_STATUS
            )
            if not retryable or self._clock() >= self._expires_at:
                raise

    # ------------------------------------------------------------------ endpoints

    def authenticate(self) -> AuthResponse:
        """Sign in with the device key; store the bearer token.

        Raises:
            ServerResponseError: refused; ``code`` is ``device_pending`` (an
                operator has not accepted the device yet: retry later),
                ``device_rejected`` (stop), ``bad_signature``, ``key_mismatch``
                or ``stale_request`` (check the clock).
            TransportError: the server cannot be reached.
        """
        request = AuthRequest(
            identity=dict(self.config.identity),
            device_type=self.config.device_type,
            public_key=public_key_to_pem(self._key.public_key()),
            timestamp=int(self._clock()),
            enrollment_token=self.config.enrollment_token,
        )
        body = request.to_dict()
        # The server verifies the signature over the bytes it receives, so
        # sign exactly the bytes sent: serialise once, sign, send those.
        content = json.dumps(body).encode()
        signature = self._key.sign(content).hex()
        url = self._url("/auth")
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._send(
                    "POST",
                    url,
                    headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
                    content=content,
                    timeout=self.limits.request_timeout,
                    stream=True,
                )
                data = self._read_body(response, self.limits.max_response_size, f"POST {url}")
            except TransportError:
                if attempt >= self.limits.max_retries:
                    raise
                self._backoff(attempt)
                continue
            if response.status_code == 200:
                break
            if response.status_code in _RETRY_STATUS and attempt < self.limits.max_retries:
                self._backoff(attempt, retry_after_seconds(response))
                continue
            raise _error_from(response, data, f"POST {url}")
        try:
            auth = AuthResponse.from_dict(json.loads(data))
        except (ValueError, RecursionError) as e:
            raise ValidationError(f"POST {url}: answer is not JSON") from e
        self.device_id, self._token = auth.device_id, auth.token
        now = self._clock()
        self._expires_at = now + auth.expires_in
        self._renew_at = now + auth.expires_in * (1 - RENEW_FRACTION)
        return auth

    def send_inventory(self, inventory: Inventory) -> None:
        """``PUT /inventory``.

        Raises:
            TransportError: the server cannot be reached (ServerResponseError: refused).
        """
        self._call("PUT", "/inventory", body=inventory.to_dict())

    def next_update(self, *, wait: int, etag: str | None) -> NextUpdate:
        """``GET /next?wait=N``, long-polling up to ``wait`` seconds.

        Raises:
            TransportError: the server cannot be reached (ServerResponseError: refused).
            ValidationError: the answer is not a valid offer, or too large.
        """
        headers = {"If-None-Match": etag} if etag else {}
        response, data = self._call(
            "GET",
            f"/next?wait={wait}",
            headers=headers,
            timeout=self.limits.request_timeout + wait,
            limit=self.limits.max_manifest_size,
            ok=(200, 304),
        )
        new_etag = response.headers.get("etag", etag)
        if response.status_code == 304:
            return NextUpdate(None, new_etag, not_modified=True)
        try:
            parsed = json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ValidationError("GET /next: answer is not JSON") from e
        if not isinstance(parsed, dict) or "update" not in parsed:
            raise ValidationError("GET /next: answer has no 'update' field")
        update = parsed["update"]
        return NextUpdate(None if update is None else UpdateOffer.from_dict(update), new_etag)

    def report_status(self, deployment_id: str, report: StatusReport) -> None:
        """``POST /deployments/{id}/status``.

        Raises:
            ServerResponseError: 409 ``deployment_aborted`` / ``status_conflict``,
                404 ``not_found``, or another refusal.
            TransportError: the server cannot be reached.
        """
        self._call("POST", f"/deployments/{deployment_id}/status", body=report.to_dict())

    def bearer_token(self) -> str:
        """A valid bearer token (signing in or renewing first when needed).

        The TUF child process fetches metadata with it (:mod:`fleetcast.agent.trust`).

        Raises:
            TransportError: the server cannot be reached (ServerResponseError: refused).
        """
        return self._ensure_token()

    def tuf_nonce(self) -> str:
        """``POST /tuf/nonce``: a fresh single-use nonce for the next version report.

        Raises:
            TransportError: the server cannot be reached (ServerResponseError: refused).
            ValidationError: the answer is not ``{"nonce": "<hex>"}``.
        """
        _, data = self._call("POST", "/tuf/nonce", ok=(200,))
        try:
            nonce = json.loads(data).get("nonce")
        except (ValueError, RecursionError, AttributeError) as e:
            raise ValidationError("POST /tuf/nonce: answer is not a JSON object") from e
        if not isinstance(nonce, str) or not re.fullmatch(r"[0-9a-f]{16,128}", nonce):
            raise ValidationError("POST /tuf/nonce: answer has no hex 'nonce'")
        return nonce

    def send_version_report(self, report: dict[str, Any]) -> None:
        """``POST /tuf/version-report`` with a signed version report.

        Raises:
            ServerResponseError: 409 ``stale_nonce`` (another nonce was issued
                since), 422 (the signature does not verify), or another refusal.
            TransportError: the server cannot be reached.
        """
        self._call("POST", "/tuf/version-report", body=report)

    def artifact_source(self, offer: UpdateOffer) -> HttpByteSource:
        """The offer's artifact as a resumable :class:`ByteSource`."""
        return HttpByteSource(self, offer.download_url, offer.artifact_size)

    def delta_source(self, delta: DeltaOffer) -> HttpByteSource:
        """An offered delta as a :class:`ByteSource`, never more than its offered size."""
        return HttpByteSource(self, delta.url, delta.size)

    def open_download(self, url: str, headers: dict[str, str]) -> httpx.Response:
        """Start a streamed download (with retries and re-authentication on connect).

        Raises:
            TransportError: the server cannot be reached.
            ServerResponseError: the server refused (404 ``not_found``, ...).
        """
        url = url if url.startswith(("http://", "https://", API_PREFIX)) else self._url(url)
        reauthenticated = False
        attempt = 0
        while True:
            attempt += 1
            try:
                all_headers = {**headers, "Authorization": f"Bearer {self._ensure_token()}"}
                response = self._send(
                    "GET",
                    url,
                    headers=all_headers,
                    content=None,
                    timeout=self.limits.request_timeout,
                    stream=True,
                )
            except TransportError:
                if attempt >= self.limits.max_retries:
                    raise
                self._backoff(attempt)
                continue
            if response.status_code in _REDIRECT_STATUS and "location" in response.headers:
                response = self._follow_redirects(response, headers)
            if response.status_code in (200, 206):
                return response
            data = self._read_body(response, self.limits.max_response_size, f"GET {url}")
            error = _error_from(response, data, f"GET {url}")
            if response.status_code == 401 and error.code == "unauthorized" and not reauthenticated:
                self._token, reauthenticated = None, True
                attempt -= 1
                continue
            if response.status_code in _RETRY_STATUS and attempt < self.limits.max_retries:
                self._backoff(attempt, retry_after_seconds(response))
                continue
            raise error

    def _follow_redirects(
        self, response: httpx.Response, headers: dict[str, str]
    ) -> httpx.Response:
        """Follow a download's redirects (to a presigned object-store URL).

        The bearer token is not sent along: the target (S3) authorises by its
        URL's signature, and the token must not leak to another host. ``Range``
        and ``If-Range`` are kept, so a resumed download stays ranged.

        Raises:
            TransportError: the target cannot be reached.
            ServerResponseError: more than ``_MAX_REDIRECTS`` redirects.
        """
        for _ in range(_MAX_REDIRECTS):
            target = response.url.join(response.headers["location"])
            response.close()
            if target.scheme not in ("http", "https"):
                raise ServerResponseError(
                    f"GET {response.url}: redirect to unsupported URL {target}",
                    status_code=response.status_code,
                )
            response = self._send(
                "GET",
                str(target),
                headers=dict(headers),
                content=None,
                timeout=self.limits.request_timeout,
                stream=True,
            )
            if response.status_code not in _REDIRECT_STATUS or "location" not in response.headers:
                return response
        response.close()
        raise ServerResponseError(
            f"GET {response.url}: more than {_MAX_REDIRECTS} redirects",
            status_code=response.status_code,
        )


class HttpByteStream:
    """A streamed HTTP response body as a :class:`ByteStream`."""

    def __init__(self, response: httpx.Response, offset: int, chunk: int) -> None:
        self._response = response
        self._offset = offset
        self._validator: str | None = response.headers.get("etag")
        self._chunks: Iterator[bytes] = response.iter_bytes(chunk)
        self._buffer = b""

    @property
    def offset(self) -> int:
        return self._offset

    @property
    def validator(self) -> str | None:
        return self._validator

    def read(self, n: int) -> bytes:
        """Raises: TransportError: the connection broke off."""
        while len(self._buffer) < n:
            try:
                chunk = next(self._chunks, b"")
            except httpx.HTTPError as e:
                raise TransportError(f"download broke off: {type(e).__name__}: {e}") from e
            if not chunk:
                break
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def close(self) -> None:
        self._response.close()


class HttpByteSource:
    """An artifact on the server, opened with ``Range`` and ``If-Range`` to resume.

    Args:
        client: the authenticated client.
        url: the offer's ``download_url`` (absolute, or relative to the server URL).
        size: the offered artifact size; the server may not serve more.
    """

    def __init__(self, client: DeviceClient, url: str, size: int) -> None:
        self.client = client
        self.url = url
        self.size = size

    def open(self, offset: int, *, validator: str | None = None) -> HttpByteStream:
        """Request the artifact from ``offset``; fall back to 0 if the server cannot resume.

        Raises:
            TransportError: the server cannot be reached.
            ServerResponseError: refused, or a ``Content-Range`` that does not
                start at ``offset``.
        """
        headers: dict[str, str] = {}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
            if validator:
                headers["If-Range"] = validator
        response = self.client.open_download(self.url, headers)
        start = 0
        if response.status_code == 206:
            content_range = response.headers.get("content-range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                response.close()
                raise ServerResponseError(
                    f"GET {self.url}: asked for bytes {offset}-, got {content_range!r}",
                    status_code=206,
                )
            start = offset
        length = response.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.size - start:
            response.close()
            raise ValidationError(
                f"GET {self.url}: server sends {length} bytes from {start}, "
                f"the artifact is {self.size} bytes"
            )
        return HttpByteStream(response, start, self.client.limits.download_chunk)


__all__ = [
    "API_PREFIX",
    "SIGNATURE_HEADER",
    "DeviceApi",
    "DeviceClient",
    "HttpByteSource",
    "HttpByteStream",
    "NextUpdate",
    "TrustApi",
    "backoff_delay",
    "pinned_tls_context",
    "retry_after_seconds",
    "tls_context",
]
