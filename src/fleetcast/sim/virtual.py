"""A virtual fleet: thousands of devices in one asyncio process, speaking the real device API.

Unlike :class:`fleetcast.sim.SimulatedFleet` (a real agent per device, one
thread each, real slot files), a virtual device is a coroutine with no
hardware: it authenticates with a real ed25519 signature (keys derived
deterministically from a seed and the serial, so a pre-provisioned fleet
can be bulk-loaded into the database with matching public keys), sends its
inventory, checks in on ``/next`` (long-poll with ``ETag`` / ``If-None-Match``,
or short polls woken by MQTT notices), downloads the offered artifact (every
byte is read, none is written), and reports ``downloading``, ``installing``,
``rebooting`` and ``success`` or ``failure``. Used by ``fleetcast sim`` and
the benchmarks under ``bench/``; good for sizing a deployment.

The :class:`FleetMix` says which share of devices fail their health check
(they report a rolled-back failure), go offline in the middle of a download
(then resume it with ``Range``), are slow (throttled download, long
install), or use push instead of long-polling. The share is applied by a
seeded random draw, so a run is repeatable.

A virtual device is its state (keys, token, ETag, installed version) and
one coroutine; it owns no connection. HTTP goes through one lean keep-alive
pool (:mod:`fleetcast.sim._http`, raw asyncio streams: httpx's pool
bookkeeping made the load generator, not the server, the bottleneck at
100,000 devices) of at most ``connections`` connections, which devices
borrow one request at a time. A long-polling device holds one for as long
as it waits, so long-poll fleets need one per device (and as many file
descriptors, on both sides); push fleets only need enough for the check-in
burst. With
MQTT, one subscription to ``{prefix}/devices/+/check-in`` carries every
virtual device's notices (a real fleet has one broker connection per
device; the broker's per-connection cost is not simulated).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import json as _json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urljoin

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.core.push import BrokerAddress
from fleetcast.core.signing import public_key_to_pem
from fleetcast.core.wire import AuthRequest, Inventory, UpdateOffer
from fleetcast.exceptions import UsageError
from fleetcast.sim._http import HttpError, Pool, Reply

API: Final = "/api/device/v1"
#: Retries of one request (with backoff) before the device gives up on this cycle.
MAX_ATTEMPTS: Final = 8


def device_key(seed: str, serial: str) -> Ed25519PrivateKey:
    """The device key of ``serial`` in a fleet made from ``seed`` (deterministic)."""
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"{seed}:{serial}".encode()).digest()
    )


def serial_of(prefix: str, index: int) -> str:
    return f"{prefix}-{index:07d}"


@dataclass(frozen=True)
class FleetMix:
    """Shares (0..1) of devices with each behaviour; the rest are healthy, fast, long-polling."""

    unhealthy: float = 0.0
    offline: float = 0.0
    slow: float = 0.0
    push: float = 0.0

    def __post_init__(self) -> None:
        for name in ("unhealthy", "offline", "slow", "push"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise UsageError(f"mix share {name} must be between 0 and 1, got {value}")


@dataclass
class FleetStats:
    """What the fleet did; ``offered_at``/``finished_at`` are ``time.monotonic()`` values."""

    checkins: int = 0
    not_modified: int = 0
    offers: int = 0
    bytes_downloaded: int = 0
    successes: int = 0
    failures: int = 0
    errors: int = 0
    push_notices: int = 0
    #: Long-polls sent (each device's first check-in in a run is a short poll
    #: that learns the idle ETag; then it long-polls with If-None-Match).
    long_polls_sent: int = 0
    #: Whether the MQTT subscription is in place.
    subscribed: bool = False
    offered_at: dict[str, float] = field(default_factory=dict)
    finished_at: dict[str, float] = field(default_factory=dict)


#: Redirects a download follows at most (like the agent: S3 presigned URLs, mirrors).
MAX_REDIRECTS: Final = 3


async def _get_following(
    pool: Pool, url: str, headers: dict[str, str], sink: Callable[[bytes], Any]
) -> Reply:
    """GET ``url`` into ``sink``, following redirects; the token stays with our server."""
    target, own = url, True
    for _ in range(MAX_REDIRECTS + 1):
        if pool.path_of(target) is not None:
            response = await pool.request("GET", target, headers=headers, sink=sink)
        else:
            own = False
            other = Pool(target, connections=1, timeout=pool.timeout)
            try:
                response = await other.request("GET", target, headers=headers, sink=sink)
            finally:
                await other.close()
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            return response
        target = urljoin(target if not target.startswith("/") else pool.base_url + target, location)
        if own:
            headers = {k: v for k, v in headers.items() if k != "Authorization"}
            own = False
    raise HttpError(f"more than {MAX_REDIRECTS} redirects from {url}")


@dataclass
class VirtualDevice:
    serial: str
    key: Ed25519PrivateKey
    unhealthy: bool
    offline: bool
    slow: bool
    push: bool
    version: str
    device_id: str | None = None
    token: str | None = None
    etag: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class DeviceGaveUpError(Exception):
    """Internal: a request kept failing; the device starts its cycle again later."""


class VirtualFleet:
    """``count`` virtual devices against ``server_url`` (see the module docstring).

    Args:
        server_url: the server (or nginx in front of it).
        count: how many devices.
        artifact_name, artifact_version: what the devices run at first.
        mix: the behaviours.
        enrollment_token: lets new devices in on first contact.
        tokens: serial -> (device id, bearer token) of a pre-provisioned fleet
            (skips ``/auth`` until a token is refused).
        long_poll: ``wait`` of a long-polling device's ``/next``.
        poll_interval: seconds between two check-ins (push devices: between
            two check-ins without a notice).
        mqtt_url, mqtt_topic_prefix: the broker push devices listen on.
        connections: most HTTP connections open at once.
        offline_seconds: how long an "offline" device stays away mid-download.
        slow_seconds: extra time a slow device takes to download and to install.
        seed, prefix: keys and serials (``{prefix}-0000001``).
        first: the index of the first device (``{prefix}-{first:07d}``), so
            that several processes can each run a slice of one fleet.
        install: False to stop each device once it was offered an update
            (to measure how fast a fleet learns of a deployment).
        first_checkin: False to let push devices with a token start by
            waiting for a notice (as if they had checked in just before).
        spread: seconds over which the devices' first contacts are spread
            (a real fleet's polls are spread over its poll interval).
    """

    def __init__(
        self,
        server_url: str,
        *,
        count: int,
        device_type: str = "acme-gw",
        artifact_name: str = "acme-fw",
        artifact_version: str = "1.0.0",
        mix: FleetMix | None = None,
        enrollment_token: str | None = None,
        tokens: Mapping[str, tuple[str, str]] | None = None,
        long_poll: int = 25,
        poll_interval: float = 30.0,
        mqtt_url: str | None = None,
        mqtt_topic_prefix: str = "fleetcast",
        connections: int = 512,
        offline_seconds: float = 5.0,
        slow_seconds: float = 5.0,
        seed: str = "fleetcast-sim",
        prefix: str = "vdev",
        first: int = 1,
        install: bool = True,
        first_checkin: bool = True,
        spread: float = 1.0,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.device_type = device_type
        self.artifact_name = artifact_name
        self.mix = mix or FleetMix()
        self.enrollment_token = enrollment_token
        self.long_poll = long_poll
        self.poll_interval = poll_interval
        self.mqtt_url = mqtt_url
        self.mqtt_topic_prefix = mqtt_topic_prefix
        self.connections = connections
        self.offline_seconds = offline_seconds
        self.slow_seconds = slow_seconds
        self.install = install
        self.first_checkin = first_checkin
        self.spread = spread
        self.stats = FleetStats()
        if self.mix.push and mqtt_url is None:
            raise UsageError("push devices need an MQTT broker (mqtt_url)")
        rng = random.Random(seed if first == 1 else f"{seed}:{first}")
        self.devices: list[VirtualDevice] = []
        for index in range(first, first + count):
            serial = serial_of(prefix, index)
            device = VirtualDevice(
                serial=serial,
                key=device_key(seed, serial),
                unhealthy=rng.random() < self.mix.unhealthy,
                offline=rng.random() < self.mix.offline,
                slow=rng.random() < self.mix.slow,
                push=rng.random() < self.mix.push,
                version=artifact_version,
            )
            if tokens and serial in tokens:
                device.device_id, device.token = tokens[serial]
            self.devices.append(device)
        self._by_id: dict[str, VirtualDevice] = {}
        self._pool: Pool | None = None
        self._stop = asyncio.Event()

    def public_keys(self) -> dict[str, str]:
        """serial -> public key PEM, to pre-provision the fleet."""
        return {d.serial: public_key_to_pem(d.key.public_key()) for d in self.devices}

    def stop(self) -> None:
        self._stop.set()

    async def run(
        self, *, duration: float, until: Callable[[FleetStats], bool] | None = None
    ) -> FleetStats:
        """Run every device until ``duration`` seconds passed or ``until(stats)`` holds."""
        pool = self._pool = Pool(
            self.server_url, connections=self.connections, timeout=30.0 + self.long_poll
        )
        for device in self.devices:
            if device.device_id is not None:
                self._by_id[device.device_id] = device
        tasks = [
            asyncio.create_task(self._live(i, device)) for i, device in enumerate(self.devices)
        ]
        if self.mqtt_url is not None and any(d.push for d in self.devices):
            tasks.append(asyncio.create_task(self._listen(self.mqtt_url)))
        deadline = time.monotonic() + duration
        try:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if until is not None and until(self.stats):
                    break
                await asyncio.sleep(0.05)
        finally:
            self._stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()
        return self.stats

    # ------------------------------------------------------------------ one device

    async def _live(self, index: int, device: VirtualDevice) -> None:
        assert self._pool is not None
        client = self._pool
        # Spread the first contacts so they do not all arrive at once.
        await asyncio.sleep(random.uniform(0.0, self.spread))
        if device.push and not self.first_checkin and device.token is not None:
            # As if it had checked in before the run: it waits for a notice.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_interval * random.uniform(0.9, 1.1)):
                    await device.wake.wait()
            device.wake.clear()
        while not self._stop.is_set():
            try:
                if device.token is None:
                    await self._auth(client, device)
                    await self._inventory(client, device)
                if not await self._cycle(client, device):
                    return
            except DeviceGaveUpError:
                self.stats.errors += 1
                await asyncio.sleep(random.uniform(1.0, 5.0))

    async def _request(
        self,
        client: Pool,
        device: VirtualDevice,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 204),
        headers: dict[str, str] | None = None,
        content: bytes = b"",
        json: Any = None,
    ) -> Reply:
        headers = dict(headers or {})
        if json is not None:
            content = _json.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if device.token is not None and path != "/auth":
                headers["Authorization"] = f"Bearer {device.token}"
            response: Reply | None
            try:
                response = await client.request(method, API + path, headers=headers, body=content)
            except HttpError:
                response = None
            if response is not None and response.status_code in ok:
                return response
            if response is not None and response.status_code == 401 and path != "/auth":
                device.token = None
                raise DeviceGaveUpError(path)
            if response is not None and response.status_code < 500 and response.status_code != 429:
                raise DeviceGaveUpError(f"{method} {path}: {response.status_code}")
            await asyncio.sleep(min(30.0, 0.5 * 2**attempt) * random.uniform(0.5, 1.0))
        raise DeviceGaveUpError(f"{method} {path}: giving up")

    async def _auth(self, client: Pool, device: VirtualDevice) -> None:
        body = json.dumps(
            AuthRequest(
                identity={"serial": device.serial},
                device_type=self.device_type,
                public_key=public_key_to_pem(device.key.public_key()),
                timestamp=int(time.time()),
                enrollment_token=self.enrollment_token,
            ).to_dict()
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Fleetcast-Signature": device.key.sign(body).hex(),
        }
        response = await self._request(
            client, device, "POST", "/auth", content=body, headers=headers
        )
        answer = response.json()
        device.device_id, device.token = answer["device_id"], answer["token"]
        self._by_id[answer["device_id"]] = device

    async def _inventory(self, client: Pool, device: VirtualDevice) -> None:
        inventory = Inventory(
            device_type=self.device_type,
            artifact_name=self.artifact_name,
            artifact_version=device.version,
            attributes={"sim": "virtual"},
        )
        await self._request(client, device, "PUT", "/inventory", json=inventory.to_dict())

    async def _cycle(self, client: Pool, device: VirtualDevice) -> bool:
        """One check-in (and the update it offers); False when the device is done."""
        started = time.monotonic()
        # Without an ETag a long-poll would wait for an update, not for a change:
        # the first check-in learns the idle answer's ETag with a short poll.
        wait = 0 if device.push or device.etag is None else self.long_poll
        if wait:
            self.stats.long_polls_sent += 1
        headers = {"If-None-Match": device.etag} if device.etag else {}
        response = await self._request(
            client, device, "GET", f"/next?wait={wait}", ok=(200, 304), headers=headers
        )
        self.stats.checkins += 1
        offer = None
        if response.status_code == 304:
            self.stats.not_modified += 1
        else:
            update = response.json()["update"]
            device.etag = None if update else response.headers.get("etag")
            offer = None if update is None else UpdateOffer.from_dict(update)
        if offer is not None:
            self.stats.offers += 1
            self.stats.offered_at.setdefault(device.serial, time.monotonic())
            if not self.install:
                return False
            await self._update(client, device, offer)
            return True
        delay = max(0.0, self.poll_interval - (time.monotonic() - started))
        if device.push:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * random.uniform(0.9, 1.1)):
                    await device.wake.wait()
            device.wake.clear()
        elif delay:
            await asyncio.sleep(delay)
        return True

    async def _report(
        self,
        client: Pool,
        device: VirtualDevice,
        deployment: str,
        status: str,
        **extra: Any,
    ) -> bool:
        """Send a status report; False when the server refused it for good (409: aborted)."""
        try:
            await self._request(
                client,
                device,
                "POST",
                f"/deployments/{deployment}/status",
                json={
                    "status": status,
                    "progress": None,
                    "message": "",
                    "log_tail": [],
                    "rolled_back": False,
                    **extra,
                },
            )
        except DeviceGaveUpError:
            return False
        return True

    async def _update(self, client: Pool, device: VirtualDevice, offer: UpdateOffer) -> None:
        deployment = offer.deployment_id
        if not await self._report(client, device, deployment, "downloading"):
            return
        await self._download(client, device, offer)
        if device.slow:
            await asyncio.sleep(self.slow_seconds)
        for status in ("installing", "rebooting"):
            if not await self._report(client, device, deployment, status):
                return
        if device.unhealthy:
            await self._report(
                client,
                device,
                deployment,
                "failure",
                message="health check failed after reboot",
                log_tail=["health: sensor service not running"],
                rolled_back=True,
            )
            self.stats.failures += 1
        else:
            await self._report(client, device, deployment, "success")
            device.version = offer.manifest.manifest.version
            self.stats.successes += 1
        self.stats.finished_at[device.serial] = time.monotonic()
        await self._inventory(client, device)

    async def _download(self, client: Pool, device: VirtualDevice, offer: UpdateOffer) -> None:
        """Read every byte of the artifact (resuming with Range after going offline)."""
        url = offer.download_url
        size = offer.artifact_size
        offset = 0
        went_offline = False
        for _attempt in range(MAX_ATTEMPTS):
            progress: dict[str, Any] = {"offset": offset, "offline": went_offline}

            async def sink(chunk: bytes, progress: dict[str, Any] = progress) -> bool:
                progress["offset"] += len(chunk)
                self.stats.bytes_downloaded += len(chunk)
                if device.slow:
                    await asyncio.sleep(self.slow_seconds * len(chunk) / max(size, 1))
                if device.offline and not progress["offline"] and progress["offset"] >= size // 2:
                    progress["offline"] = True
                    return False
                return True

            headers = {"Authorization": f"Bearer {device.token}"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
            try:
                response = await _get_following(client, url, headers, sink)
            except HttpError:
                await asyncio.sleep(random.uniform(0.5, 2.0))
                continue
            if response.status_code not in (200, 206):
                raise DeviceGaveUpError(f"download: {response.status_code}")
            if response.status_code == 200:
                # A full answer although a range was asked: it started at 0.
                progress["offset"] -= offset
            offset, went_offline = progress["offset"], progress["offline"]
            if offset >= size:
                return
            await asyncio.sleep(self.offline_seconds)
        raise DeviceGaveUpError("download kept failing")

    async def _listen(self, mqtt_url: str) -> None:
        import aiomqtt

        address = BrokerAddress.parse(mqtt_url)
        topic = f"{self.mqtt_topic_prefix}/devices/+/check-in"
        while not self._stop.is_set():
            try:
                async with aiomqtt.Client(
                    address.host, address.port, username=address.username, password=address.password
                ) as mqtt:
                    await mqtt.subscribe(topic, qos=0)
                    self.stats.subscribed = True
                    async for message in mqtt.messages:
                        parts = str(message.topic).split("/")
                        device = self._by_id.get(parts[-2]) if len(parts) >= 2 else None
                        if device is not None and device.push:
                            self.stats.push_notices += 1
                            device.wake.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(1.0)
