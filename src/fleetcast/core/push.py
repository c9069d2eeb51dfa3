"""The push notice both sides agree on: broker address, topic, payload (no I/O here).

The server publishes :data:`CHECK_IN_PAYLOAD` on :func:`device_topic` when a
deployment or phase that concerns the device starts; the agent subscribes to
its own topic and checks in (``GET /next``) when anything arrives. The
notice carries no instructions: what to install only ever comes from the
authenticated device API, so a forged notice causes one harmless check-in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from fleetcast.exceptions import UsageError

CHECK_IN_PAYLOAD: Final = b"check-in"
DEFAULT_TOPIC_PREFIX: Final = "fleetcast"


def device_topic(prefix: str, device_id: str) -> str:
    """The topic of one device: ``{prefix}/devices/{device_id}/check-in``."""
    return f"{prefix}/devices/{device_id}/check-in"


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is and how to log in, from ``mqtt[s]://[user[:password]@]host[:port]``."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Raises: UsageError: not an ``mqtt://`` or ``mqtts://`` URL with a host."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise UsageError(f"MQTT URL {url!r} is not of the form mqtt[s]://host[:port]")
        tls = parts.scheme == "mqtts"
        try:
            port = parts.port or (8883 if tls else 1883)
        except ValueError as e:
            raise UsageError(f"MQTT URL {url!r} has an invalid port") from e
        return cls(
            host=parts.hostname,
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )
