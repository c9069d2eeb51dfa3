"""An offer for a deployment the server does not know installs nothing.

The deployment id travels outside the signed manifest: a corrupting
middlebox (found by the hostile-network tests) can change it. The device
then reports "downloading" for a deployment the server has never put it
in, and gets 404 ``not_found``. Before, the agent dropped the report and
installed anyway, so the server never heard of the update and later saw
it as "already installed". Now it cancels before touching the slot, and
installs the real offer when the server makes it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice
from fleetcast.agent.journal import Journal, Phase
from fleetcast.agent.results import StepResult
from fleetcast.agent.runner import Agent
from fleetcast.core.wire import StatusReport
from fleetcast.exceptions import ServerResponseError
from tests.agent.conftest import FakeApi, drive
from tests.factories import BuiltArtifact, make_artifact


@pytest.fixture
def v11(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> BuiltArtifact:
    return make_artifact(tmp_path / "artifacts", vendor_key, version="1.1.0")


class _StrictApi(FakeApi):
    """Answers 404 not_found to reports for deployments it never offered for real."""

    known: frozenset[str] = frozenset({"dep-1"})

    def report_status(self, deployment_id: str, report: StatusReport) -> None:
        if deployment_id not in self.known:
            raise ServerResponseError("not in it", status_code=404, code="not_found")
        super().report_status(deployment_id, report)


def test_a_report_answered_not_found_cancels_the_update_before_the_slot_is_written(
    device: SimulatedDevice, v11: BuiltArtifact
) -> None:
    api = _StrictApi()
    api.offer(v11, deployment_id="dep-corrupted")
    agent = Agent(device.config, client=api)
    assert agent.step() is StepResult.ABORTED
    assert device.slot_bytes("b") == b""
    assert not device.bootloader.in_trial()
    assert Journal(device.config.state_dir).load().phase is Phase.IDLE
    assert device.installed()[1] == "1.0.0"
    # The server offers the real deployment: it is installed and reported as usual.
    api.offers.clear()
    api.offer(v11, deployment_id="dep-1")
    assert drive(device, api)[-1] is StepResult.UPDATED
    assert list(dict.fromkeys(api.statuses("dep-1"))) == [
        "downloading",
        "installing",
        "rebooting",
        "success",
    ]
