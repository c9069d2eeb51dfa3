"""Push over MQTT: a deployment start publishes a check-in notice per device."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from fleetcast.core.push import CHECK_IN_PAYLOAD, BrokerAddress, device_topic
from fleetcast.exceptions import UsageError
from fleetcast.server import Settings, prepare
from fleetcast.server.mqtt import MqttNotifier
from tests.factories import BuiltArtifact
from tests.server.harness import running_server
from tests.services import mqtt_broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[str, int]]:
    with mqtt_broker(tmp_path) as address:
        yield address


def test_broker_urls() -> None:
    assert BrokerAddress.parse("mqtt://h") == BrokerAddress("h", 1883)
    assert BrokerAddress.parse("mqtts://u:p%40ss@h:8884") == BrokerAddress(
        "h", 8884, "u", "p@ss", tls=True
    )
    with pytest.raises(UsageError):
        BrokerAddress.parse("http://h")


async def test_a_deployment_start_publishes_a_notice_on_each_devices_topic(
    tmp_path: Path, broker: tuple[str, int], artifact: BuiltArtifact
) -> None:
    """Three devices of four are targeted: exactly their topics get the fixed notice."""
    host, port = broker
    prefix = f"fleetcast-test-{tmp_path.name}"
    settings = Settings(
        data_dir=tmp_path / "data",
        engine_interval=0.05,
        mqtt_url=f"mqtt://{host}:{port}",
        mqtt_topic_prefix=prefix,
    )
    token = await asyncio.to_thread(prepare, settings)
    assert token is not None
    async with (
        running_server(settings, token) as server,
        aiomqtt.Client(host, port) as listener,
    ):
        assert isinstance(server.state.notifier, MqttNotifier)
        await listener.subscribe(f"{prefix}/devices/+/check-in", qos=0)
        uploaded = await server.upload(artifact)
        targeted = await server.fleet(3, tags=("eu",), prefix="EU")
        await server.fleet(1, prefix="US")
        await server.deploy(uploaded["id"], target={"tags": ["eu"]})

        expected = {device_topic(prefix, d.device_id or "") for d in targeted}
        seen: set[str] = set()
        async with asyncio.timeout(10):
            async for message in listener.messages:
                assert message.payload == CHECK_IN_PAYLOAD
                seen.add(str(message.topic))
                if seen >= expected:
                    break
        assert seen == expected
