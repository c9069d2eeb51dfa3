"""Test harness: a running app, a simulated device speaking the wire objects, helpers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from fleetcast.core.signing import public_key_to_pem
from fleetcast.core.wire import (
    AuthRequest,
    AuthResponse,
    DeviceUpdateStatus,
    Inventory,
    StatusReport,
    UpdateOffer,
)
from fleetcast.server import Settings, create_app
from fleetcast.server.runtime import ServerState
from tests.factories import BuiltArtifact

BASE = "http://fleetcast.test"
T = TypeVar("T")


@dataclass
class Server:
    """The app running in process, with an unauthenticated and an admin client."""

    app: FastAPI
    settings: Settings
    http: httpx.AsyncClient
    admin: httpx.AsyncClient
    admin_token: str

    @property
    def state(self) -> ServerState:
        state: ServerState = self.app.state.fleetcast
        return state

    def device(self, serial: str, device_type: str = "acme-gw") -> SimDevice:
        return SimDevice(self.http, {"serial": serial}, device_type)

    async def upload(self, built: BuiltArtifact) -> dict[str, Any]:
        response = await self.admin.post(
            "/api/v1/artifacts",
            content=built.path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def fleet(
        self,
        count: int,
        *,
        device_type: str = "acme-gw",
        tags: tuple[str, ...] = (),
        prefix: str = "SN",
    ) -> list[SimDevice]:
        """``count`` accepted, logged-in devices (admitted with an enrollment token)."""
        response = await self.admin.post(
            "/api/v1/enrollment-tokens", json={"expires_in": 3600, "tags": list(tags)}
        )
        assert response.status_code == 201, response.text
        token = response.json()["token"]
        devices = [self.device(f"{prefix}-{i:04d}", device_type) for i in range(count)]
        for device in devices:
            await device.login(enrollment_token=token)
        return devices

    async def deploy(self, artifact_id: str, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "test deployment")
        body.setdefault("target", {"device_types": ["acme-gw"]})
        response = await self.admin.post(
            "/api/v1/deployments", json={"artifact_id": artifact_id, **body}
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def deployment(self, deployment_id: str) -> dict[str, Any]:
        response = await self.admin.get(f"/api/v1/deployments/{deployment_id}")
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def wait_for_deployment(
        self, deployment_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """Poll the deployment until ``predicate`` holds (the engine runs in the background)."""
        return await eventually(lambda: self.deployment(deployment_id), predicate, timeout)


@asynccontextmanager
async def running_server(settings: Settings, admin_token: str) -> AsyncIterator[Server]:
    """Run the app's lifespan (ASGITransport does not) and hand out clients."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url=BASE) as http,
            httpx.AsyncClient(
                transport=transport,
                base_url=BASE,
                headers={"Authorization": f"Bearer {admin_token}"},
            ) as admin,
        ):
            yield Server(app, settings, http, admin, admin_token)


async def eventually(
    fetch: Callable[[], Awaitable[T]], predicate: Callable[[T], bool], timeout: float = 5.0
) -> T:
    """Fetch until ``predicate`` holds; fail with the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.02)


@dataclass
class SimDevice:
    """A device as the agent would be: an ed25519 key, the wire objects, a bearer token."""

    http: httpx.AsyncClient
    identity: dict[str, str]
    device_type: str = "acme-gw"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    token: str | None = None
    device_id: str | None = None

    @property
    def public_pem(self) -> str:
        return public_key_to_pem(self.key.public_key())

    def auth_body(
        self,
        *,
        timestamp: int | None = None,
        enrollment_token: str | None = None,
        public_pem: str | None = None,
    ) -> bytes:
        request = AuthRequest(
            identity=self.identity,
            device_type=self.device_type,
            public_key=public_pem or self.public_pem,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            enrollment_token=enrollment_token,
        )
        return json.dumps(request.to_dict()).encode()

    async def auth(
        self, body: bytes | None = None, *, signature: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        """POST /auth, signed with this device's key unless ``signature`` is given."""
        body = self.auth_body(**kwargs) if body is None else body
        signature = self.key.sign(body).hex() if signature is None else signature
        return await self.http.post(
            "/api/device/v1/auth",
            content=body,
            headers={"Content-Type": "application/json", "X-Fleetcast-Signature": signature},
        )

    async def login(self, **kwargs: Any) -> AuthResponse:
        response = await self.auth(**kwargs)
        assert response.status_code == 200, response.text
        answer = AuthResponse.from_dict(response.json())
        self.token, self.device_id = answer.token, answer.device_id
        return answer

    @property
    def headers(self) -> dict[str, str]:
        assert self.token, "log in first"
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.http.get("/api/device/v1" + path, headers=headers, **kwargs)

    async def send_inventory(self, inventory: Inventory) -> httpx.Response:
        return await self.http.put(
            "/api/device/v1/inventory", json=inventory.to_dict(), headers=self.headers
        )

    async def next(self, *, wait: int = 0, etag: str | None = None) -> httpx.Response:
        headers = {"If-None-Match": etag} if etag else {}
        return await self.get("/next", params={"wait": wait}, headers=headers)

    async def offer(self) -> UpdateOffer | None:
        response = await self.next()
        assert response.status_code == 200, response.text
        update = response.json()["update"]
        return None if update is None else UpdateOffer.from_dict(update)

    async def report(self, deployment_id: str, status: str, **fields: Any) -> httpx.Response:
        report = StatusReport(DeviceUpdateStatus(status), **fields)
        return await self.http.post(
            f"/api/device/v1/deployments/{deployment_id}/status",
            json=report.to_dict(),
            headers=self.headers,
        )

    async def install(self, deployment_id: str, final: str = "success", **fields: Any) -> None:
        """Walk through the states like the agent and end with ``final``."""
        for status in ("downloading", "installing", "rebooting"):
            response = await self.report(deployment_id, status)
            assert response.status_code == 204, response.text
        response = await self.report(deployment_id, final, **fields)
        assert response.status_code == 204, response.text
