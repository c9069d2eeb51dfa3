"""The operator uploading through the management API, and a device reporting its version."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tuf.api.metadata import Metadata, Root, SuccinctRoles, Targets

from fleetcast.core.canonical import canonical_json
from fleetcast.core.signing import sign as sign_bytes
from tests.factories import BuiltArtifact
from tests.server.harness import Server, SimDevice
from tests.server.trust.offline import (
    OfflineKeys,
    artifact_target,
    empty_bin,
    next_version,
    sign,
    to_bytes,
)


@dataclass
class TufRepo:
    """The operator's view of both repositories, uploading through the management API."""

    server: Server
    keys: OfflineKeys = field(default_factory=OfflineKeys)
    online: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_roots: list[Metadata[Root]] = field(default_factory=list)
    director_roots: list[Metadata[Root]] = field(default_factory=list)
    targets: Metadata[Targets] | None = None
    bins: dict[str, Metadata[Targets]] = field(default_factory=dict)

    async def put(self, path: str, md: Metadata[Any] | bytes) -> httpx.Response:
        """``PUT /api/v1/tuf/{path}`` with the file's bytes."""
        body = md if isinstance(md, bytes) else to_bytes(md)
        return await self.server.admin.put(
            f"/api/v1/tuf/{path}", content=body, headers={"Content-Type": "application/json"}
        )

    async def accepted(self, path: str, md: Metadata[Any]) -> dict[str, Any]:
        response = await self.put(path, md)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def fetch_online_keys(self) -> dict[str, dict[str, Any]]:
        response = await self.server.admin.get("/api/v1/tuf/online-keys")
        assert response.status_code == 200, response.text
        self.online = response.json()
        return self.online

    @property
    def succinct(self) -> SuccinctRoles:
        assert self.targets is not None and self.targets.signed.delegations is not None
        succinct = self.targets.signed.delegations.succinct_roles
        assert succinct is not None
        return succinct

    async def set_up(self) -> None:
        """What ``fleetcast keys init`` does: both roots, targets, every empty bin."""
        await self.fetch_online_keys()
        image_root = sign(self.keys.image_root(self.online), self.keys.root[:2])
        director_root = sign(self.keys.director_root(self.online), self.keys.root[:2])
        await self.accepted("image/root", image_root)
        await self.accepted("director/root", director_root)
        self.image_roots.append(image_root)
        self.director_roots.append(director_root)
        self.targets = sign(self.keys.targets_md(), self.keys.targets)
        await self.accepted("image/targets", self.targets)
        for role in self.succinct.get_roles():
            self.bins[role] = sign(empty_bin(), self.keys.targets)
            await self.accepted(f"image/{role}", self.bins[role])

    async def release(self, built: BuiltArtifact) -> str:
        """What ``fleetcast artifact release`` does: add the target to its bin, re-sign, upload."""
        manifest = built.signed.manifest
        entry = artifact_target(built.path, manifest.name, manifest.version, ["acme-gw"])
        role = self.succinct.get_role_for_target(entry.path)
        new = next_version(self.bins[role])
        new.signed.targets[entry.path] = entry
        sign(new, self.keys.targets)
        await self.accepted(f"image/{role}", new)
        self.bins[role] = new
        return role


def version_report(
    device: SimDevice,
    nonce: str,
    *,
    target: str | None = None,
    sha256: str | None = None,
    release_counter: int = 0,
    device_id: str | None = None,
) -> dict[str, Any]:
    """A version report signed with the device's key, as the agent sends it (ADR 0008)."""
    signed = {
        "device_id": device_id or device.device_id,
        "nonce": nonce,
        "time": int(time.time()),
        "installed": {"target": target, "sha256": sha256, "release_counter": release_counter},
    }
    signature = sign_bytes(device.key, canonical_json(signed))
    return {"signed": signed, "signatures": [signature.to_dict()]}


async def report_version(device: SimDevice, **kwargs: Any) -> tuple[str, httpx.Response]:
    """Get a nonce, send a signed version report with it; the nonce and the answer."""
    response = await device.http.post("/api/device/v1/tuf/nonce", headers=device.headers)
    assert response.status_code == 200, response.text
    nonce: str = response.json()["nonce"]
    body = version_report(device, nonce, **kwargs)
    answer = await device.http.post(
        "/api/device/v1/tuf/version-report", json=body, headers=device.headers
    )
    return nonce, answer
