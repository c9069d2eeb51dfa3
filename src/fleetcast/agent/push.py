"""Check in at once when the server says so: an optional MQTT subscription (paho-mqtt).

Configured with ``mqtt_url`` in ``agent.toml``. Once the device knows its id
(after authenticating), :class:`PushListener` subscribes to
``{mqtt_topic_prefix}/devices/{device_id}/check-in`` in paho's network
thread, which also reconnects with backoff by itself. Any message on the
topic only wakes the poll loop early: the notice carries no instructions,
and what to install still comes from the authenticated ``GET /next``, so a
forged notice costs one check-in and nothing else.

paho-mqtt is imported only when MQTT is configured, so the agent has no
MQTT dependency otherwise.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

from fleetcast.core.push import BrokerAddress, device_topic
from fleetcast.exceptions import UsageError

logger = logging.getLogger("fleetcast.agent.push")


class PushListener:
    """Sets ``wake`` whenever a check-in notice arrives for this device.

    Args:
        url: ``mqtt[s]://[user[:password]@]host[:port]``.
        topic_prefix: the server's ``mqtt_topic_prefix``.
        device_id: the id the server gave this device.
        wake: the event the poll loop waits on.

    Raises:
        UsageError: the URL is malformed, or paho-mqtt is not installed.
    """

    def __init__(
        self, url: str, *, topic_prefix: str, device_id: str, wake: threading.Event
    ) -> None:
        self.address = BrokerAddress.parse(url)
        self.topic = device_topic(topic_prefix, device_id)
        self.wake = wake
        self.notices = 0
        self.subscribed = threading.Event()
        try:
            import paho.mqtt.client as mqtt
            from paho.mqtt.enums import CallbackAPIVersion
        except ImportError as e:
            raise UsageError(
                "mqtt_url is set but paho-mqtt is not installed (pip install paho-mqtt)"
            ) from e
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fleetcast-agent-{device_id}",
            clean_session=True,
        )
        if self.address.username is not None:
            client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            client.tls_set_context(ssl.create_default_context())
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client

    def start(self) -> None:
        """Connect in paho's background thread (it keeps reconnecting while the broker is away)."""
        self._client.connect_async(self.address.host, self.address.port, keepalive=60)
        self._client.loop_start()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any
    ) -> None:
        if getattr(reason, "is_failure", False):
            logger.warning("MQTT broker refused the connection: %s", reason)
            return
        # Subscribed again on every (re)connection: the session is clean.
        client.subscribe(self.topic, qos=1)
        self.subscribed.set()
        # Notices sent while disconnected are lost: check in once to catch up.
        self.wake.set()

    def _on_message(self, _client: Any, _userdata: Any, _message: Any) -> None:
        self.notices += 1
        self.wake.set()
