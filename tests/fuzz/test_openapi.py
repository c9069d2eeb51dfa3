"""Schemathesis over the served OpenAPI spec: no 5xx, one error shape.

Every operation of ``/openapi.json`` (management API, native device API and
the hawkBit DDI and Mender compatibility APIs the app serves) gets generated
requests, valid and invalid, sent to the in-process app built by
``create_app`` with a real admin token (management API) or a real device token
(device APIs). Half of the cases use the ids of real objects (an accepted
device, an uploaded artifact, a running deployment) instead of generated ones,
so the fuzzing reaches past "404 not found".

What must hold for every response: the status is below 500, and every error
(4xx) that has a body is exactly ``{"error": {"code", "message", "details"}}``.

A few examples per operation by default; ``FLEETCAST_LONG_FUZZ=1`` runs many
more (``FLEETCAST_OPENAPI_EXAMPLES=N`` sets the number).
"""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi

from fleetcast.core.signing import public_key_to_pem
from fleetcast.server import Settings, create_app, prepare
from tests.factories import make_artifact

LONG = os.environ.get("FLEETCAST_LONG_FUZZ") == "1"
EXAMPLES = int(os.environ.get("FLEETCAST_OPENAPI_EXAMPLES", "150" if LONG else "8"))

#: Prefixes of the operations a device (not an operator) calls.
DEVICE_PREFIXES = ("/api/device/", "/api/devices/")


@dataclass
class Fixture:
    admin_token: str
    device_token: str
    ids: dict[str, str]
    statuses: dict[int, int]


def _setup(tmp: Path, app: Any, admin_token: str, key: Ed25519PrivateKey) -> Fixture:
    """Objects the fuzzed requests can refer to: an accepted device with a token, an
    artifact and a running deployment of it to that device."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    with asgi.get_client(app) as http:
        enrollment = http.post(
            "/api/v1/enrollment-tokens", json={"expires_in": 3600}, headers=admin
        )
        assert enrollment.status_code == 201, enrollment.text
        device_key = Ed25519PrivateKey.generate()
        body = json.dumps(
            {
                "identity": {"serial": "FUZZ-1"},
                "device_type": "acme-gw",
                "public_key": public_key_to_pem(device_key.public_key()),
                "timestamp": int(time.time()),
                "enrollment_token": enrollment.json()["token"],
            }
        ).encode()
        auth = http.post(
            "/api/device/v1/auth",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Fleetcast-Signature": device_key.sign(body).hex(),
            },
        )
        assert auth.status_code == 200, auth.text
        built = make_artifact(tmp / "artifacts", key, version="1.1.0")
        artifact = http.post(
            "/api/v1/artifacts",
            data=built.path.read_bytes(),
            headers={**admin, "Content-Type": "application/octet-stream"},
        )
        assert artifact.status_code == 201, artifact.text
        deployment = http.post(
            "/api/v1/deployments",
            json={
                "name": "fuzz",
                "artifact_id": artifact.json()["id"],
                "target": {"device_ids": [auth.json()["device_id"]]},
            },
            headers=admin,
        )
        assert deployment.status_code == 201, deployment.text
        token = http.get("/api/v1/tokens/me", headers=admin).json()
    device_id = auth.json()["device_id"]
    return Fixture(
        admin_token=admin_token,
        device_token=auth.json()["token"],
        ids={
            "device_id": device_id,
            "controller_id": "FUZZ-1",
            "artifact_id": artifact.json()["id"],
            "deployment_id": deployment.json()["id"],
            "token_id": token["id"],
            "tenant": "default",
        },
        statuses={},
    )


def _operations() -> dict[str, Any]:
    """The served spec's operations, by label (``GET /api/v1/devices``)."""
    spec = create_app(Settings(data_dir=Path("/nonexistent"))).openapi()
    loaded = schemathesis.openapi.from_dict(spec)
    return {op.ok().label: op.ok() for op in loaded.get_all_operations()}


OPERATIONS = _operations()


@pytest.fixture(scope="module")
def fuzz_app(
    tmp_path_factory: pytest.TempPathFactory, vendor_key: Ed25519PrivateKey
) -> Iterator[tuple[Any, Fixture]]:
    """The app with its lifespan running (SQLite), and the real objects of ``_setup``."""
    tmp = tmp_path_factory.mktemp("openapi")
    app_settings = Settings(data_dir=tmp / "data", engine_interval=0.2, max_long_poll=1)
    admin_token = prepare(app_settings)
    assert admin_token is not None
    app = create_app(app_settings)
    fixture = _setup(tmp, app, admin_token, vendor_key)
    yield app, fixture
    asgi.shutdown_lifespans()
    total = sum(fixture.statuses.values())
    print(f"\nopenapi fuzz: {total} requests, statuses {dict(sorted(fixture.statuses.items()))}")


def check_error_shape(status: int, body: bytes, what: str) -> None:
    """An error response is the one JSON shape (or has no body at all, like a HEAD)."""
    if not body:
        return
    data = json.loads(body)
    assert isinstance(data, dict) and set(data) == {"error"}, f"{what}: {data!r}"
    error = data["error"]
    assert set(error) == {"code", "message", "details"}, f"{what}: {error!r}"
    assert isinstance(error["code"], str) and error["code"], f"{what}: {error!r}"
    assert isinstance(error["message"], str), f"{what}: {error!r}"
    assert error["details"] is None or isinstance(error["details"], dict), f"{what}: {error!r}"


def _params() -> list[Any]:
    # Every operation, the hawkBit DDI and Mender compatibility APIs included.
    return [pytest.param(label) for label in sorted(OPERATIONS)]


@pytest.mark.parametrize("label", _params())
def test_no_server_errors_and_one_error_shape(label: str, fuzz_app: tuple[Any, Fixture]) -> None:
    """Generated requests, valid and invalid, never get a 5xx, and every error is the
    documented shape."""
    app, fixture = fuzz_app
    operation = OPERATIONS[label]
    path = operation.path
    token = fixture.device_token if path.startswith(DEVICE_PREFIXES) else fixture.admin_token
    headers = {"Authorization": f"Bearer {token}"}
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not LONG,
        database=None,
    )
    def run(case: Any) -> None:
        if case.path_parameters and zlib.crc32(repr(case.path_parameters).encode()) % 2:
            for name in case.path_parameters:
                if name in fixture.ids:
                    case.path_parameters[name] = fixture.ids[name]
        if isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = 0  # a long poll only slows the run down
        response = case.call(app=app, headers=headers, timeout=30)
        status = response.status_code
        fixture.statuses[status] = fixture.statuses.get(status, 0) + 1
        what = f"{case.method} {case.formatted_path} -> {status}"
        assert status < 500, f"{what}: {response.content[:500]!r}"
        if status >= 400 and case.method != "HEAD":
            check_error_shape(status, response.content, what)

    run()
