"""The package surface: what the CLI calls, OpenAPI, settings, and layering."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

import fleetcast.server
from fleetcast.exceptions import UsageError
from fleetcast.server import Settings, create_app, prepare
from tests.server.harness import Server, running_server


def test_public_names() -> None:
    assert fleetcast.server.__all__ == ["Settings", "create_app", "prepare"]


def test_settings_defaults_follow_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETCAST_DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path / 'fleetcast.db'}"
    assert settings.blob_dir == tmp_path / "blobs"
    assert settings.device_token_ttl == 3600 and settings.max_long_poll == 60
    monkeypatch.setenv("FLEETCAST_ENGINE_INTERVAL", "0.5")
    monkeypatch.setenv("FLEETCAST_PUBLIC_URL", "https://ota.example.com/")
    from_env = Settings(data_dir=tmp_path)
    assert from_env.engine_interval == 0.5
    assert from_env.public_url == "https://ota.example.com"


async def test_prepare_is_safe_to_repeat(settings: Settings) -> None:
    """The first start creates an admin token; later starts create nothing."""
    token = await asyncio.to_thread(prepare, settings)
    assert token is not None and token.startswith("fca_")
    assert await asyncio.to_thread(prepare, settings) is None
    assert settings.resolved_blob_dir.is_dir()


async def test_create_app_refuses_an_unprepared_database(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    with pytest.raises(UsageError, match="prepare"):
        async with app.router.lifespan_context(app):
            pass


async def test_bad_trusted_key_fails_at_startup(
    settings: Settings, admin_token: str, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(UsageError, match="trusted key"):
        async with running_server(settings.model_copy(update={"trusted_keys": [bad]}), admin_token):
            pass


async def test_openapi_and_docs(server: Server) -> None:
    spec = (await server.http.get("/openapi.json")).json()
    paths = spec["paths"]
    for path in (
        "/api/device/v1/auth",
        "/api/device/v1/next",
        "/api/device/v1/inventory",
        "/api/device/v1/deployments/{deployment_id}/status",
        "/api/device/v1/artifacts/{artifact_id}/download",
        "/api/v1/devices",
        "/api/v1/devices/{device_id}/history",
        "/api/v1/artifacts",
        "/api/v1/deployments",
        "/api/v1/deployments/{deployment_id}/abort",
        "/api/v1/enrollment-tokens",
    ):
        assert path in paths, path
    assert (await server.http.get("/docs")).status_code == 200


def test_importing_the_server_creates_nothing(tmp_path: Path) -> None:
    """No engine, settings or files at import time."""
    code = "import fleetcast.server, os; print(sorted(os.listdir('.')))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_core_and_artifact_do_not_import_the_server() -> None:
    code = (
        "import sys, fleetcast.core.wire, fleetcast.artifact, fleetcast.exceptions; "
        "heavy = ('fleetcast.server', 'fastapi', 'sqlalchemy'); "
        "print([m for m in sys.modules if m.startswith(heavy)])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
