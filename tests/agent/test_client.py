"""The HTTP client: signed auth, re-auth, retries, resumable downloads, exception mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import AgentConfig, DeviceClient, SimulatedDevice
from fleetcast.agent.client import SIGNATURE_HEADER, backoff_delay
from fleetcast.core.signing import public_key_from_pem
from fleetcast.core.wire import DeviceUpdateStatus, Inventory, StatusReport, UpdateOffer
from fleetcast.exceptions import ServerResponseError, TransportError, UsageError, ValidationError
from tests.factories import BuiltArtifact

Handler = Callable[[httpx.Request], httpx.Response]


def _error(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": code, "details": None}})


class Server:
    """A scripted device API: /auth always accepts; other routes follow ``routes``."""

    def __init__(self, routes: dict[str, list[Handler | httpx.Response]] | None = None) -> None:
        self.routes = routes or {}
        self.requests: list[httpx.Request] = []
        self.tokens = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/auth") and "/auth" not in self.routes:
            body = json.loads(request.content)
            key = public_key_from_pem(body["public_key"])
            key.verify(bytes.fromhex(request.headers[SIGNATURE_HEADER]), request.content)
            self.tokens += 1
            return httpx.Response(
                200, json={"device_id": "dev-1", "token": f"tok-{self.tokens}", "expires_in": 60}
            )
        for route, answers in self.routes.items():
            if path.endswith(route):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                return answer(request) if callable(answer) else answer
        return _error(404, "not_found")


@pytest.fixture
def config(make_device: Callable[..., SimulatedDevice]) -> AgentConfig:
    return make_device().config


def _client(config: AgentConfig, server: Server) -> tuple[DeviceClient, list[float]]:
    sleeps: list[float] = []
    client = DeviceClient(
        config,
        Ed25519PrivateKey.generate(),
        transport=httpx.MockTransport(server),
        sleep=sleeps.append,
        rng=lambda: 1.0,
    )
    return client, sleeps


def test_auth_signs_the_exact_body(config: AgentConfig) -> None:
    """The server verifies the ed25519 signature over the raw body it received."""
    server = Server()
    client, _ = _client(config, server)
    auth = client.authenticate()
    assert auth.token == "tok-1" and client.device_id == "dev-1"
    body = json.loads(server.requests[0].content)
    assert body["identity"] == config.identity and body["device_type"] == "acme-gw"


def test_bearer_token_and_reauth_on_401(config: AgentConfig) -> None:
    """An expired token: the server says 401 unauthorized, the client signs in again
    once and repeats the request with the new token."""
    server = Server({"/inventory": [_error(401, "unauthorized"), httpx.Response(204)]})
    client, _ = _client(config, server)
    client.send_inventory(Inventory("acme-gw", "acme-fw", "1.0.0"))
    calls = [(r.url.path, r.headers.get("authorization")) for r in server.requests]
    assert calls == [
        ("/api/device/v1/auth", None),
        ("/api/device/v1/inventory", "Bearer tok-1"),
        ("/api/device/v1/auth", None),
        ("/api/device/v1/inventory", "Bearer tok-2"),
    ]


def test_reauth_only_once(config: AgentConfig) -> None:
    server = Server({"/inventory": [_error(401, "unauthorized")]})
    client, _ = _client(config, server)
    with pytest.raises(ServerResponseError) as info:
        client.send_inventory(Inventory("acme-gw", None, None))
    assert info.value.code == "unauthorized" and server.tokens == 2


@pytest.mark.parametrize(("status", "code"), [(401, "device_pending"), (403, "device_rejected")])
def test_pending_and_rejected_are_not_retried(config: AgentConfig, status: int, code: str) -> None:
    server = Server({"/auth": [_error(status, code)]})
    client, sleeps = _client(config, server)
    with pytest.raises(ServerResponseError) as info:
        client.authenticate()
    assert (info.value.status_code, info.value.code) == (status, code)
    assert len(server.requests) == 1 and sleeps == []


def test_next_update_offer_etag_and_304(config: AgentConfig, artifact_v2: BuiltArtifact) -> None:
    offer = UpdateOffer("d", "a", 10, "0" * 64, "/x", artifact_v2.signed)
    server = Server(
        {
            "/next": [
                httpx.Response(200, json={"update": None}, headers={"ETag": '"e1"'}),
                lambda r: (
                    httpx.Response(304)
                    if r.headers.get("if-none-match") == '"e1"'
                    else httpx.Response(500)
                ),
                httpx.Response(200, json={"update": offer.to_dict()}, headers={"ETag": '"e2"'}),
            ]
        }
    )
    client, _ = _client(config, server)
    first = client.next_update(wait=5, etag=None)
    assert first.offer is None and first.etag == '"e1"'
    assert "wait=5" in str(server.requests[-1].url)
    second = client.next_update(wait=5, etag=first.etag)
    assert second.not_modified and second.offer is None
    third = client.next_update(wait=5, etag=None)
    assert third.offer == offer and third.etag == '"e2"'


def test_oversized_answer_is_refused(config: AgentConfig) -> None:
    server = Server({"/next": [httpx.Response(200, content=b" " * (2 * 1024 * 1024))]})
    client, _ = _client(config, server)
    with pytest.raises(ValidationError, match="larger than"):
        client.next_update(wait=0, etag=None)


def test_status_report_conflict_code(config: AgentConfig) -> None:
    server = Server({"/status": [_error(409, "deployment_aborted")]})
    client, _ = _client(config, server)
    with pytest.raises(ServerResponseError) as info:
        client.report_status("dep-1", StatusReport(DeviceUpdateStatus.DOWNLOADING))
    assert (info.value.status_code, info.value.code) == (409, "deployment_aborted")
    assert json.loads(server.requests[-1].content)["status"] == "downloading"


def test_5xx_is_retried_with_backoff_then_raised(config: AgentConfig) -> None:
    """The server keeps failing: the client tries max_retries times, backing off, then
    raises ServerResponseError (a TransportError: the runner retries later)."""
    server = Server({"/inventory": [httpx.Response(503, text="busy")]})
    client, sleeps = _client(config, server)
    with pytest.raises(ServerResponseError) as info:
        client.send_inventory(Inventory("acme-gw", None, None))
    assert info.value.status_code == 503 and info.value.code is None
    assert len([r for r in server.requests if r.url.path.endswith("inventory")]) == 2
    assert len(sleeps) == 1


def test_backoff_grows_and_is_capped() -> None:
    delays = [backoff_delay(n, base=1, cap=10, rng=lambda: 1.0) for n in range(1, 7)]
    assert delays == [1, 2, 4, 8, 10, 10]
    assert backoff_delay(3, base=1, cap=10, rng=lambda: 0.0) == 2  # jitter: half


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (httpx.ConnectError("refused"), TransportError),
        (httpx.ConnectTimeout("slow"), TransportError),
        (httpx.ReadTimeout("slow"), TransportError),
        (httpx.ReadError("reset"), TransportError),
        (httpx.RemoteProtocolError("garbage"), TransportError),
        (httpx.ProxyError("proxy"), TransportError),
        (httpx.DecodingError("gzip"), TransportError),
        (httpx.TooManyRedirects("loop"), TransportError),
        (httpx.UnsupportedProtocol("gopher"), UsageError),
        (httpx.InvalidURL("bad"), UsageError),
    ],
)
def test_every_httpx_exception_is_mapped(
    config: AgentConfig, exc: Exception, expected: type[Exception]
) -> None:
    """No httpx exception leaks out of the client; each becomes one of ours, chained."""

    def boom(request: httpx.Request) -> httpx.Response:
        raise exc

    client, _ = _client(config, Server({"/auth": [boom]}))
    with pytest.raises(expected) as info:
        client.authenticate()
    assert info.value.__cause__ is exc
    assert not isinstance(info.value, httpx.HTTPError)


def test_non_json_error_keeps_status(config: AgentConfig) -> None:
    client, _ = _client(config, Server({"/auth": [httpx.Response(418, text="teapot")]}))
    with pytest.raises(ServerResponseError) as info:
        client.authenticate()
    assert info.value.status_code == 418 and info.value.code is None
    assert "teapot" in str(info.value)


def _download_server(data: bytes, etag: str = '"v1"') -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        range_header = request.headers.get("range")
        if range_header is None or request.headers.get("if-range", etag) != etag:
            return httpx.Response(200, content=data, headers={"ETag": etag})
        start = int(range_header.removeprefix("bytes=").removesuffix("-"))
        return httpx.Response(
            206,
            content=data[start:],
            headers={"ETag": etag, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
        )

    return handler


def test_download_resumes_with_range_and_if_range(config: AgentConfig, tmp_path: Path) -> None:
    """A resumed download asks for bytes=N- with If-Range set to the ETag seen at first."""
    data = bytes(range(256)) * 40
    server = Server({"/download": [_download_server(data)]})
    client, _ = _client(config, server)
    source = client.artifact_source(_offer_stub(len(data)))
    first = source.open(0)
    assert first.read(100) == data[:100] and first.validator == '"v1"'
    first.close()
    resumed = source.open(1000, validator='"v1"')
    request = server.requests[-1]
    assert request.headers["range"] == "bytes=1000-"
    assert request.headers["if-range"] == '"v1"'
    assert request.headers["authorization"].startswith("Bearer ")
    assert resumed.offset == 1000 and resumed.read(10_000) == data[1000:]


def test_download_restarts_when_the_artifact_changed(config: AgentConfig) -> None:
    """If-Range does not match (a new artifact behind the same URL): the server sends
    200 with the whole file and the stream says it starts at 0."""
    data = b"x" * 5000
    client, _ = _client(config, Server({"/download": [_download_server(data, '"v2"')]}))
    stream = client.artifact_source(_offer_stub(len(data))).open(1000, validator='"v1"')
    assert stream.offset == 0 and stream.read(10_000) == data


def test_download_larger_than_offered_is_refused(config: AgentConfig) -> None:
    client, _ = _client(config, Server({"/download": [_download_server(b"x" * 5000)]}))
    with pytest.raises(ValidationError, match="artifact is 100 bytes"):
        client.artifact_source(_offer_stub(100)).open(0)


def test_broken_download_is_a_transport_error(config: AgentConfig) -> None:
    class Broken(httpx.SyncByteStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield b"abc"
            raise httpx.ReadError("reset")

    server = Server({"/download": [lambda r: httpx.Response(200, stream=Broken())]})
    client, _ = _client(config, server)
    stream = client.artifact_source(_offer_stub(1000)).open(0)
    with pytest.raises(TransportError, match="broke off"):
        stream.read(1000)


def _offer_stub(size: int) -> UpdateOffer:
    """Only ``download_url`` and ``artifact_size`` matter to a download."""

    class Stub:
        download_url = "/api/device/v1/artifacts/a1/download"
        artifact_size = size

    return Stub()  # type: ignore[return-value]
