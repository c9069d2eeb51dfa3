"""Test doubles for the compatibility APIs: Mender artifacts, a Mender device, a DDI device.

They speak the wire formats the real clients use (checked against SWUpdate
2022.12 and mender-client 3.4, whose real processes run in
``tests/e2e/test_compat_clients.py``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from tests.server.harness import Server


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def mender_artifact(
    name: str = "app-2.0",
    device_types: tuple[str, ...] = ("acme-mender",),
    files: dict[str, bytes] | None = None,
    *,
    payload_type: str = "single-file",
    tamper: bool = False,
    version: dict[str, Any] | None = None,
) -> bytes:
    """A Mender artifact (format 3, gzip) like ``mender-artifact write module-image`` makes.

    ``tamper`` changes a payload file after the manifest was written.
    """
    files = files or {
        "hello.txt": b"hello\n",
        "dest_dir": b"/opt/app\n",
        "filename": b"hello.txt\n",
    }
    version_bytes = json.dumps(version or {"format": "mender", "version": 3}).encode()
    header_info = {
        "payloads": [{"type": payload_type}],
        "artifact_provides": {"artifact_name": name},
        "artifact_depends": {"device_type": list(device_types)},
    }
    type_info = {"type": payload_type, "artifact_provides": {"rootfs-image.version": name}}
    header = gzip.compress(
        tar_of(
            [
                ("header-info", json.dumps(header_info).encode()),
                ("headers/0000/type-info", json.dumps(type_info).encode()),
            ]
        )
    )
    data = gzip.compress(
        tar_of(
            [
                (k, v + (b"!" if tamper and i == 0 else b""))
                for i, (k, v) in enumerate(files.items())
            ]
        )
    )
    lines = [f"{hashlib.sha256(v).hexdigest()}  data/0000/{k}" for k, v in files.items()]
    lines += [
        f"{hashlib.sha256(header).hexdigest()}  header.tar.gz",
        f"{hashlib.sha256(version_bytes).hexdigest()}  version",
    ]
    manifest = ("\n".join(lines) + "\n").encode()
    return tar_of(
        [
            ("version", version_bytes),
            ("manifest", manifest),
            ("header.tar.gz", header),
            ("data/0000.tar.gz", data),
        ]
    )


KeyKind = str  # "rsa", "ecdsa", "ed25519"


def _private_key(kind: KeyKind) -> Any:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return ed25519.Ed25519PrivateKey.generate()


@dataclass
class MenderDevice:
    """A device as the Mender client is: a key, id_data, a bearer token."""

    http: httpx.AsyncClient
    identity: dict[str, str]
    key_kind: KeyKind = "rsa"
    key: Any = None
    token: str | None = None
    tenant_token: str = ""

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = _private_key(self.key_kind)

    @property
    def public_pem(self) -> str:
        return str(
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, body: bytes) -> str:
        if isinstance(self.key, rsa.RSAPrivateKey):
            signature = self.key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        elif isinstance(self.key, ec.EllipticCurvePrivateKey):
            signature = self.key.sign(body, ec.ECDSA(hashes.SHA256()))
        else:
            signature = self.key.sign(body)
        return base64.b64encode(signature).decode()

    def auth_body(self) -> bytes:
        # Like the Go client: json.Encoder output, with a trailing newline.
        data = {
            "id_data": json.dumps(self.identity),
            "pubkey": self.public_pem,
            "tenant_token": self.tenant_token,
        }
        return (json.dumps(data) + "\n").encode()

    async def auth(
        self, body: bytes | None = None, *, signature: str | None = None
    ) -> httpx.Response:
        body = self.auth_body() if body is None else body
        response = await self.http.post(
            "/api/devices/v1/authentication/auth_requests",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-MEN-Signature": self.sign(body) if signature is None else signature,
            },
        )
        if response.status_code == 200:
            self.token = response.text
        return response

    @property
    def headers(self) -> dict[str, str]:
        assert self.token, "authenticate first"
        return {"Authorization": f"Bearer {self.token}"}

    async def inventory(self, attributes: dict[str, Any], method: str = "PUT") -> httpx.Response:
        body = [{"name": k, "value": v} for k, v in attributes.items()]
        return await self.http.request(
            method, "/api/devices/v1/inventory/device/attributes", json=body, headers=self.headers
        )

    async def next(self, provides: dict[str, str]) -> httpx.Response:
        return await self.http.post(
            "/api/devices/v2/deployments/device/deployments/next",
            json={"device_provides": provides, "update_control_map": True},
            headers=self.headers,
        )

    async def status(self, deployment_id: str, status: str) -> httpx.Response:
        return await self.http.put(
            f"/api/devices/v1/deployments/device/deployments/{deployment_id}/status",
            json={"status": status},
            headers=self.headers,
        )

    async def log(self, deployment_id: str, lines: list[str]) -> httpx.Response:
        messages = [
            {"timestamp": "2026-11-27T00:00:00Z", "level": "error", "message": line}
            for line in lines
        ]
        return await self.http.put(
            f"/api/devices/v1/deployments/device/deployments/{deployment_id}/log",
            json={"messages": messages},
            headers=self.headers,
        )


@dataclass
class DdiDevice:
    """A hawkBit DDI client: a controller id and a TargetToken (or the GatewayToken)."""

    http: httpx.AsyncClient
    controller_id: str
    token: str = ""
    scheme: str = "TargetToken"
    tenant: str = "default"
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def root(self) -> str:
        return f"/{self.tenant}/controller/v1/{self.controller_id}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"{self.scheme} {self.token}"}

    async def get(self, path: str = "", **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.http.get(self.root + path, headers=headers, **kwargs)

    async def poll(self) -> dict[str, Any]:
        response = await self.get()
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        self.seen.append(body)
        return body

    async def follow(self, href: str) -> httpx.Response:
        return await self.http.get(href, headers=self.headers)

    async def feedback(
        self,
        action_id: int,
        execution: str,
        finished: str = "none",
        details: list[str] | None = None,
        *,
        progress: tuple[int, int] | None = None,
        kind: str = "deploymentBase",
    ) -> httpx.Response:
        # SWUpdate's body: an integer id and a legacy time stamp.
        result: dict[str, Any] = {"finished": finished}
        if progress is not None:
            result["progress"] = {"cnt": progress[0], "of": progress[1]}
        body = {
            "id": action_id,
            "time": "20261127T120000",
            "status": {"result": result, "execution": execution, "details": details or []},
        }
        return await self.http.post(
            f"{self.root}/{kind}/{action_id}/feedback", json=body, headers=self.headers
        )


async def upload_swu(
    server: Server,
    content: bytes = b"swu image",
    *,
    name: str = "acme-swu",
    version: str = "1.1.0",
    compatible: tuple[str, ...] = ("acme-swu",),
) -> dict[str, Any]:
    response = await server.admin.post(
        "/api/v1/artifacts",
        params={
            "format": "file",
            "name": name,
            "version": version,
            "compatible": list(compatible),
            "filename": f"{name}-{version}.swu",
        },
        content=content,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def ddi_device(
    server: Server, controller_id: str, *, device_type: str = "acme-swu"
) -> tuple[str, DdiDevice]:
    """A DDI device, preauthorized with a generated TargetToken and accepted on first contact."""
    response = await server.admin.post(
        "/api/v1/devices/preauthorize",
        json={
            "kind": "ddi",
            "identity": {"controller_id": controller_id},
            "device_type": device_type,
        },
    )
    assert response.status_code == 201, response.text
    device_id = response.json()["id"]
    response = await server.admin.post(f"/api/v1/devices/{device_id}/target-token", json={})
    assert response.status_code == 200, response.text
    device = DdiDevice(server.http, controller_id, response.json()["token"])
    assert (await device.get()).status_code == 200  # first contact: accepted
    return device_id, device


def action_id(poll: dict[str, Any], link: str = "deploymentBase") -> int:
    href: str = poll["_links"][link]["href"]
    return int(href.split("?")[0].rsplit("/", 1)[1])
