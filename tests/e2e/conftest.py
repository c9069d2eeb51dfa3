"""End-to-end fixtures: a real server over HTTP on loopback and real agents.

Each scenario runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.cli._api import ManagementClient
from fleetcast.core.signing import public_key_to_pem
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.factories import BuiltArtifact, make_artifact
from tests.pg import temporary_database

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    data_dir = tmp_path / "server"
    if request.param == "sqlite":
        yield Settings(data_dir=data_dir, engine_interval=0.2)
        return
    with temporary_database() as url:
        yield Settings(data_dir=data_dir, database_url=url, engine_interval=0.2)


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
def admin(server: ServerThread) -> Iterator[ManagementClient]:
    assert server.admin_token is not None
    with ManagementClient(server.url, server.admin_token) as client:
        yield client


@pytest.fixture
def vendor_pub(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "vendor.pub"
    path.write_text(public_key_to_pem(vendor_key.public_key()))
    return path


@pytest.fixture
def release(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> Callable[[str], BuiltArtifact]:
    def build(version: str) -> BuiltArtifact:
        return make_artifact(tmp_path / "artifacts", vendor_key, version=version)

    return build


def wait_until(what: str, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def accept_all(admin: ManagementClient, count: int) -> list[dict[str, Any]]:
    """Accept ``count`` pending devices as an operator would; return them."""

    def pending() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = admin.get("/devices", status="pending")["items"]
        return items if len(items) >= count else None

    devices = wait_until(f"{count} pending devices", pending)
    for device in devices:
        admin.post(f"/devices/{device['id']}/accept")
    return list(devices)


def wait_inventory(admin: ManagementClient, count: int, version: str) -> dict[str, dict[str, Any]]:
    def ready() -> dict[str, dict[str, Any]] | None:
        items = admin.get("/devices", status="accepted")["items"]
        done = {d["id"]: d for d in items if d.get("artifact_version") == version}
        return done if len(done) >= count else None

    result: dict[str, dict[str, Any]] = wait_until(f"{count} devices on {version}", ready)
    return result


def wait_deployment(
    admin: ManagementClient, deployment_id: str, statuses: tuple[str, ...] = ("completed",)
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        d: dict[str, Any] = admin.get(f"/deployments/{deployment_id}")
        return d if d["status"] in statuses else None

    result: dict[str, Any] = wait_until(f"deployment {deployment_id} {statuses}", finished, 90)
    return result
