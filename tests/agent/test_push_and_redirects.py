"""Scale-out on the device side: downloads redirected to object storage, MQTT wake-ups."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import paho.mqtt.publish
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import AgentConfig, DeviceClient, SimulatedDevice
from fleetcast.agent.push import PushListener
from fleetcast.core.push import device_topic
from fleetcast.exceptions import ServerResponseError
from tests.agent.test_client import Server, _offer_stub
from tests.services import mqtt_broker

STORE = "http://objects.test:9000"


def _client(
    config: AgentConfig, handler: Callable[[httpx.Request], httpx.Response]
) -> DeviceClient:
    return DeviceClient(
        config,
        Ed25519PrivateKey.generate(),
        transport=httpx.MockTransport(handler),
        sleep=lambda _s: None,
        rng=lambda: 1.0,
    )


@pytest.fixture
def config(make_device: Callable[..., SimulatedDevice]) -> AgentConfig:
    return make_device().config


def test_a_redirected_download_keeps_its_range_and_drops_the_token(config: AgentConfig) -> None:
    """The server answers 307 to a presigned URL: the agent fetches it with the same
    Range and If-Range, without the bearer token (the URL carries its own signature)."""
    data = bytes(range(256)) * 40
    seen: list[httpx.Request] = []

    def store(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        start = int(request.headers["range"].removeprefix("bytes=").removesuffix("-"))
        return httpx.Response(
            206,
            content=data[start:],
            headers={"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"},
        )

    api = Server(
        {"/download": [httpx.Response(307, headers={"Location": f"{STORE}/b/k?X-Amz-Signature=s"})]}
    )

    def handler(request: httpx.Request) -> httpx.Response:
        return store(request) if str(request.url).startswith(STORE) else api(request)

    client = _client(config, handler)
    stream = client.artifact_source(_offer_stub(len(data))).open(1000, validator='"v1"')
    assert stream.offset == 1000 and stream.read(10_000) == data[1000:]
    (request,) = seen
    assert request.url.params["X-Amz-Signature"] == "s"
    assert request.headers["range"] == "bytes=1000-"
    assert request.headers["if-range"] == '"v1"'
    assert "authorization" not in request.headers


def test_a_redirect_loop_is_refused(config: AgentConfig) -> None:
    loop = httpx.Response(302, headers={"Location": f"{STORE}/again"})
    client = _client(
        config,
        lambda request: (
            loop if "again" in str(request.url) else Server({"/download": [loop]})(request)
        ),
    )
    with pytest.raises(ServerResponseError, match="redirects"):
        client.artifact_source(_offer_stub(100)).open(0)


def test_a_check_in_notice_wakes_the_agent(tmp_path: Path) -> None:
    """Anything published on the device's topic sets the wake event; nothing else does."""
    with mqtt_broker(tmp_path) as (host, port):
        wake = threading.Event()
        prefix = f"fleetcast-test-{tmp_path.name}"
        listener = PushListener(
            f"mqtt://{host}:{port}", topic_prefix=prefix, device_id="dev-1", wake=wake
        )
        listener.start()
        try:
            assert listener.subscribed.wait(10)
            assert wake.wait(5)  # a (re)connection checks in once to catch up
            wake.clear()
            paho.mqtt.publish.single(
                device_topic(prefix, "dev-2"), b"check-in", hostname=host, port=port
            )
            assert not wake.wait(0.5)
            # A forged notice with "instructions" in it: it only wakes the agent.
            paho.mqtt.publish.single(
                device_topic(prefix, "dev-1"), b'{"install": "evil"}', hostname=host, port=port
            )
            assert wake.wait(10)
            assert listener.notices == 1
        finally:
            listener.close()
