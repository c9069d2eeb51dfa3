"""Channels from the device's side: HTTPS with a pinned CA, token renewal, Retry-After."""

from __future__ import annotations

import dataclasses
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import AgentConfig, DeviceClient, SimulatedDevice
from fleetcast.agent.client import system_tls_context, tls_context
from fleetcast.exceptions import ServerResponseError, TransportError, UsageError
from fleetcast.server import Settings
from fleetcast.server.devtls import DevTls, ensure_dev_tls
from fleetcast.sim import ServerThread


def _enrollment_token(server: ServerThread, verify: ssl.SSLContext | bool) -> str:
    response = httpx.post(
        f"{server.url}/api/v1/enrollment-tokens",
        json={"expires_in": 600},
        headers={"Authorization": f"Bearer {server.admin_token}"},
        verify=verify,
    )
    assert response.status_code == 201, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> DevTls:
    return ensure_dev_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def https_server(tmp_path: Path, tls: DevTls) -> Iterator[ServerThread]:
    settings = Settings(data_dir=tmp_path / "server")
    with ServerThread(settings, tls_cert=tls.server_cert, tls_key=tls.server_key) as server:
        yield server


@pytest.fixture
def config(make_device: Callable[..., SimulatedDevice]) -> AgentConfig:
    return make_device().config


def test_agent_pinning_the_server_ca_talks_https(
    https_server: ServerThread, tls: DevTls, config: AgentConfig
) -> None:
    """An agent with ``ca_bundle = ca.pem`` signs in and polls over HTTPS."""
    assert https_server.url.startswith("https://")
    token = _enrollment_token(https_server, ssl.create_default_context(cafile=tls.ca_cert))
    pinned = dataclasses.replace(
        config, server_url=https_server.url, ca_bundle=tls.ca_cert, enrollment_token=token
    )
    with closing(DeviceClient(pinned, Ed25519PrivateKey.generate())) as client:
        assert client.authenticate().device_id
        assert client.next_update(wait=0, etag=None).offer is None
    # The server's own certificate works as the pin too.
    leaf = dataclasses.replace(pinned, ca_bundle=tls.server_cert, identity={"serial": "SN-leaf"})
    with closing(DeviceClient(leaf, Ed25519PrivateKey.generate())) as client:
        assert client.authenticate().device_id


def test_a_wrong_ca_is_a_clear_transport_error(
    https_server: ServerThread, tmp_path: Path, config: AgentConfig
) -> None:
    other = ensure_dev_tls(tmp_path / "other")
    wrong = dataclasses.replace(config, server_url=https_server.url, ca_bundle=other.ca_cert)
    sleeps: list[float] = []
    with (
        closing(DeviceClient(wrong, Ed25519PrivateKey.generate(), sleep=sleeps.append)) as client,
        pytest.raises(TransportError, match=r"TLS certificate does not verify against .*ca\.pem"),
    ):
        client.authenticate()
    # Without a pin the system trust store is used: a self-signed CA is not in it.
    unpinned = dataclasses.replace(config, server_url=https_server.url)
    with (
        closing(
            DeviceClient(unpinned, Ed25519PrivateKey.generate(), sleep=sleeps.append)
        ) as client,
        pytest.raises(TransportError, match="system trust store"),
    ):
        client.authenticate()


def _hashed_ca_dir(path: Path, *certs: Path) -> Path:
    """A CA directory as ``openssl rehash`` lays one out (``<subject hash>.0``)."""
    path.mkdir()
    for i, cert in enumerate(certs):
        (path / f"cert{i}.pem").write_bytes(cert.read_bytes())
    subprocess.run(["openssl", "rehash", str(path)], check=True)
    return path


def test_without_a_pin_the_system_store_is_read_from_its_hashed_directory(
    https_server: ServerThread,
    tls: DevTls,
    tmp_path: Path,
    config: AgentConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no ``ca_bundle`` the agent trusts the system CAs, looked up lazily in the
    hashed directory (a bundle file would be parsed whole into memory): a server whose
    CA is in that directory verifies, one whose CA is not is refused."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_ca_dir(tmp_path / "certs", tls.ca_cert)))
    context = system_tls_context()
    assert context.cert_store_stats()["x509_ca"] == 0  # nothing parsed up front
    token = _enrollment_token(https_server, ssl.create_default_context(cafile=tls.ca_cert))
    system = dataclasses.replace(config, server_url=https_server.url, enrollment_token=token)
    with closing(DeviceClient(system, Ed25519PrivateKey.generate())) as client:
        assert client.authenticate().device_id

    other = ensure_dev_tls(tmp_path / "other")
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_ca_dir(tmp_path / "others", other.ca_cert)))
    with (
        closing(DeviceClient(system, Ed25519PrivateKey.generate(), sleep=lambda _: None)) as c,
        pytest.raises(TransportError, match="TLS certificate does not verify"),
    ):
        c.authenticate()


def test_an_unusable_ca_bundle_is_a_usage_error(tmp_path: Path, config: AgentConfig) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    for path in (empty, tmp_path / "missing.pem"):
        bad = dataclasses.replace(config, server_url="https://localhost:1", ca_bundle=path)
        with pytest.raises(UsageError, match="ca_bundle"):
            tls_context(bad)


def test_ca_bundle_in_agent_toml(tmp_path: Path, config: AgentConfig) -> None:
    pinned = dataclasses.replace(config, ca_bundle=tmp_path / "ca.pem")
    path = tmp_path / "agent.toml"
    path.write_text(pinned.to_toml())
    assert AgentConfig.load(path).ca_bundle == tmp_path / "ca.pem"
    path.write_text(pinned.to_toml().replace(f'"{tmp_path}/ca.pem"', '"ca.pem"'))
    assert AgentConfig.load(path).ca_bundle == tmp_path / "ca.pem", "relative to the file"


class Counting(httpx.HTTPTransport):
    """A real transport that remembers the paths it sent."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path.rsplit("/", 1)[-1])
        return super().handle_request(request)


def test_tokens_are_renewed_before_they_expire_and_the_old_one_still_works(
    tmp_path: Path, config: AgentConfig
) -> None:
    """With 60 s tokens the agent signs in again after 54 s, not on a 401 at 60 s."""
    settings = Settings(data_dir=tmp_path / "server", device_token_ttl=60)
    with ServerThread(settings) as server:
        token = _enrollment_token(server, verify=False)
        now = [time.time()]
        transport = Counting()
        device = dataclasses.replace(config, server_url=server.url, enrollment_token=token)
        with closing(
            DeviceClient(
                device, Ed25519PrivateKey.generate(), transport=transport, clock=lambda: now[0]
            )
        ) as client:
            assert client.authenticate().expires_in == 60
            first = client._token
            now[0] += 53
            client.next_update(wait=0, etag=None)
            assert transport.paths == ["auth", "next"], "90% of the lifetime left: no renewal"
            now[0] += 2
            client.next_update(wait=0, etag=None)
            assert transport.paths[2:] == ["auth", "next"], "renewed first, no 401 on the way"
        # The server still accepts the token the agent replaced, until it expires.
        old = httpx.get(
            f"{server.url}/api/device/v1/next?wait=0", headers={"Authorization": f"Bearer {first}"}
        )
        assert old.status_code == 200, old.text


def _scripted(answers: dict[str, list[httpx.Response]]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        queue = answers[request.url.path.rsplit("/", 1)[-1]]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return httpx.MockTransport(handler)


def _auth_ok(n: int, expires_in: int = 100) -> httpx.Response:
    return httpx.Response(
        200, json={"device_id": "dev-1", "token": f"tok-{n}", "expires_in": expires_in}
    )


def _limited(retry_after: str) -> httpx.Response:
    body = {"error": {"code": "rate_limited", "message": "slow down", "details": None}}
    return httpx.Response(429, json=body, headers={"Retry-After": retry_after})


def test_rate_limited_auth_waits_for_retry_after(config: AgentConfig) -> None:
    sleeps: list[float] = []
    transport = _scripted({"auth": [_limited("7"), _limited("3600"), _auth_ok(1)]})
    limits = dataclasses.replace(config.limits, max_retries=3, backoff_base=1, backoff_cap=60)
    config = dataclasses.replace(config, limits=limits)
    with closing(
        DeviceClient(
            config,
            Ed25519PrivateKey.generate(),
            transport=transport,
            sleep=sleeps.append,
            rng=lambda: 1.0,
        )
    ) as client:
        assert client.authenticate().token == "tok-1"
    assert sleeps == [7.0, 60.0], "as told, but never beyond the cap"


def test_a_failed_renewal_keeps_the_valid_token(config: AgentConfig) -> None:
    now = [1000.0]
    unavailable = httpx.Response(503, json={"error": {"code": "x", "message": "", "details": None}})
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/auth"):
            return _auth_ok(1) if not seen else unavailable
        seen.append(request.headers["authorization"])
        return httpx.Response(200, json={"update": None})

    with closing(
        DeviceClient(
            config,
            Ed25519PrivateKey.generate(),
            transport=httpx.MockTransport(handler),
            sleep=lambda _: None,
            clock=lambda: now[0],
        )
    ) as client:
        client.next_update(wait=0, etag=None)
        now[0] += 95
        client.next_update(wait=0, etag=None)
        assert seen == ["Bearer tok-1", "Bearer tok-1"]
        now[0] += 10  # expired now: the failure is the caller's
        with pytest.raises(ServerResponseError) as raised:
            client.next_update(wait=0, etag=None)
        assert raised.value.status_code == 503
