"""The runner in TUF mode: resume across a power cut, in-place artifacts, a repository
that is down, and the child process's failure modes."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetcast.agent import Agent, SimulatedDevice, StepResult
from fleetcast.agent.trust.check import check_offer, run_child
from fleetcast.agent.trust.installed import InPlaceTargets
from fleetcast.agent.trust.protocol import REFUSALS, Refusal, TrustRequest, VerifiedTarget
from fleetcast.core.wire import UpdateOffer
from fleetcast.exceptions import (
    DeviceStateError,
    InvalidDataError,
    TransportError,
    ValidationError,
)
from tests.agent.conftest import CutAt, MiB, PowerCut, make_tar, noisy_image
from tests.agent.trust.conftest import (
    Releaser,
    assert_on_committed_slot,
    failure_message,
    run_update,
)
from tests.agent.trust.evil_server import FleetState, Release


def test_a_download_cut_by_power_loss_resumes_and_is_still_hashed_whole(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """The power goes at the second checkpoint of a 3 MiB image. After the reboot the
    agent resumes the download (``Range``) and, to hash the whole artifact, reads the
    part before the resume point once more; the update commits."""
    v11 = release("1.1.0", release_counter=200, image=noisy_image("1.1.0", 3 * MiB))
    fleet.offer_release(v11)
    agent = Agent(device.config, on_transition=CutAt("checkpoint", nth=2))
    with pytest.raises(PowerCut):
        for _ in range(5):
            agent.step()
    agent.close()
    device.power_cycle()

    assert run_update(device)[-1] is StepResult.UPDATED, fleet.reports
    assert device.installed() == ("acme-fw", "1.1.0")
    downloads = [r for r in fleet.requests if "/download" in r]
    # The first try; after the reboot the prefix again (from 0), then the rest (ranged).
    assert ["bytes=" in r for r in downloads] == [False, False, True], downloads


def test_an_in_place_artifact_records_its_release_counter(
    device: SimulatedDevice, fleet: FleetState, release: Releaser, tmp_path: Path
) -> None:
    """A ``files`` artifact installs in place in TUF mode; its target and release counter
    are recorded, and an older release of the same name is then refused."""
    dest = tmp_path / "etc-acme"

    def files_release(version: str, counter: int) -> Release:
        tree = {"app.conf": f"version {version}\n".encode()}
        return release(
            version,
            release_counter=counter,
            name="acme-conf",
            image=make_tar(tree),
            payload_type="files",
            meta={"dest": str(dest)},
        )

    fleet.offer_release(files_release("2.0.0", 500))
    assert run_update(device)[-1] is StepResult.UPDATED, fleet.reports
    assert (dest / "app.conf").read_text() == "version 2.0.0\n"
    recorded = InPlaceTargets(device.root / "state").get("acme-conf")
    assert recorded is not None and recorded.release_counter == 500

    fleet.offer_release(files_release("2.1.0", 400), deployment_id="dep-2")
    assert run_update(device)[-1] is StepResult.FAILED
    assert "lower than the installed 500" in failure_message(fleet, "dep-2")
    assert (dest / "app.conf").read_text() == "version 2.0.0\n"


def test_a_repository_that_is_down_is_retried_not_refused(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """The TUF endpoints answer 503: the agent retries later (no failure report, nothing
    downloaded); once they are back, the update installs."""
    fleet.offer_release(release("1.1.0", release_counter=200))
    fleet.tuf_status = 503
    agent = Agent(device.config)
    try:
        assert agent.step() is StepResult.RETRY
    finally:
        agent.close()
    assert fleet.final == {} and not any("/download" in r for r in fleet.requests)
    assert_on_committed_slot(device)

    fleet.tuf_status = None
    assert run_update(device)[-1] is StepResult.UPDATED


def _request(tmp_path: Path, **changes: object) -> TrustRequest:
    values: dict[str, object] = {
        "server_url": "http://127.0.0.1:9",
        "token": "t",
        "ca_bundle": None,
        "state_dir": str(tmp_path),
        "image_root": str(tmp_path / "image-root.json"),
        "director_root": str(tmp_path / "director-root.json"),
        "device_id": "dev-1",
        "nonce": "00" * 16,
        **changes,
    }
    return TrustRequest(**values)  # type: ignore[arg-type]


def test_a_missing_root_file_is_a_usage_refusal(tmp_path: Path) -> None:
    verdict = run_child(_request(tmp_path), timeout=60)
    assert verdict.refusal is not None and verdict.refusal.kind == "usage"
    assert "cannot read TUF root" in verdict.refusal.message


def test_an_unreachable_server_is_a_transport_refusal(tmp_path: Path, fleet: FleetState) -> None:
    (tmp_path / "image-root.json").write_bytes(fleet.image.initial_root)
    (tmp_path / "director-root.json").write_bytes(fleet.director.initial_root)
    verdict = run_child(_request(tmp_path, timeout=5.0), timeout=60)
    assert verdict.refusal is not None and verdict.refusal.kind == "transport"
    assert isinstance(verdict.refusal.error(), TransportError)


def test_a_child_that_overruns_its_time_is_killed_and_retried(tmp_path: Path) -> None:
    with pytest.raises(TransportError, match="did not finish"):
        run_child(_request(tmp_path), timeout=0.001)


def test_a_child_that_fails_is_a_device_state_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request the child cannot use (exit 2) is the agent's bug, not the repository's."""
    monkeypatch.setattr(TrustRequest, "to_dict", lambda self: {"format": 999})
    with pytest.raises(DeviceStateError, match="exited 2"):
        run_child(_request(tmp_path), timeout=60)


def test_every_refusal_kind_maps_into_the_exception_tree() -> None:
    for kind, error in REFUSALS.items():
        raised = Refusal(kind, "why").error()
        assert isinstance(raised, error) and "why" in str(raised)
    refusing = {"untrusted", "mismatch", "not-directed", "incompatible", "downgrade"}
    for kind in refusing:
        assert isinstance(Refusal(kind, "x").error(), InvalidDataError)
    assert isinstance(Refusal("transport", "x").error(), TransportError)


def test_a_target_without_fleetcast_custom_is_refused(fleet: FleetState, release: Releaser) -> None:
    v11 = release("1.1.0", release_counter=200)
    offer = UpdateOffer.from_dict(fleet.offer_release(v11))
    bare = VerifiedTarget(
        path=v11.target.path,
        length=v11.target.length,
        sha256=v11.target.hashes["sha256"],
        custom={},
        deployment_id="dep-1",
    )
    with pytest.raises(ValidationError, match=r"custom\.fleetcast"):
        check_offer(bare, offer, device_type="acme-gw", installed_counter=0)
