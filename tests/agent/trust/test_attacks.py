"""One test per attack of the TUF specification (and Uptane's director replay), against a device.

Each test serves malicious metadata or payloads from a real HTTP server
(:mod:`tests.agent.trust.evil_server`) that holds every *online* key (the
server's snapshot, timestamp and director keys: what a compromised Fleetcast
server has) and none of the vendor's offline root and targets keys unless
the test says so. The device is a simulated A/B device in TUF mode that
trusts *no* vendor manifest key, so TUF alone decides. Each test asserts the
agent refuses (a failure report naming the reason) and the device still
boots its committed slot with the version it had, nothing armed.
``test_baseline.py`` shows the same server, untampered, gets the update in.
"""

from __future__ import annotations

import copy
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent import SimulatedDevice, StepResult
from tests.agent.trust.conftest import (
    Releaser,
    assert_on_committed_slot,
    failure_message,
    run_update,
)
from tests.agent.trust.evil_server import FleetState, Release, make_target
from tests.agent.trust.tufrepo import in_days, signer


def _refused(device: SimulatedDevice, fleet: FleetState, deployment_id: str = "dep-1") -> str:
    results = run_update(device)
    assert results[-1] is StepResult.FAILED, (results, fleet.reports)
    return failure_message(fleet, deployment_id)


def _install(device: SimulatedDevice, fleet: FleetState, release: Release, dep: str) -> None:
    fleet.offer_release(release, deployment_id=dep)
    results = run_update(device)
    assert results[-1] is StepResult.UPDATED, (results, fleet.reports)


def test_arbitrary_software(device: SimulatedDevice, fleet: FleetState, release: Releaser) -> None:
    """Arbitrary software: the attacker builds its own artifact (signed with its own
    key), offers it and directs the device to it with the director key it holds.
    The image repository, signed offline by the vendor, has no such target: the
    device refuses before downloading a byte."""
    evil = release(
        "6.6.6", release_counter=10**9, key=Ed25519PrivateKey.generate(), in_image_repo=False
    )
    fleet.offer_release(evil)

    assert "not in the image repository" in _refused(device, fleet)
    assert_on_committed_slot(device)
    assert device.slot_bytes("b") == b""
    assert not any("/download" in r for r in fleet.requests)


def test_rollback_attack(device: SimulatedDevice, fleet: FleetState, release: Releaser) -> None:
    """Rollback: the device runs 1.1.0 (release counter 200). The attacker directs
    it to the vendor's older 1.0.5 (counter 100, really released) with
    ``allow_downgrade`` set by the director key it holds: refused on the release
    counter. Then it serves an image timestamp older than one the device has
    seen: refused as a metadata rollback."""
    _install(device, fleet, release("1.1.0", release_counter=200), "dep-1")
    old_timestamp = fleet.image.files["timestamp.json"]
    v105 = release("1.0.5", release_counter=100)
    fleet.offer_release(v105, deployment_id="dep-2", allow_downgrade=True)

    message = _refused(device, fleet, "dep-2")
    assert "release counter 100, lower than the installed 200" in message
    assert_on_committed_slot(device, "1.1.0")

    fleet.offer_release(release("1.2.0", release_counter=300), deployment_id="dep-3")
    fleet.overrides[("image", "timestamp.json")] = old_timestamp
    message = _refused(device, fleet, "dep-3")
    assert "BadVersionNumberError" in message
    assert_on_committed_slot(device, "1.1.0")


def test_fast_forward_recovery(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """Fast-forward attack and recovery (TUF 5.3.11, 5.4.x): with the stolen
    snapshot and timestamp keys the attacker pushes their versions to 1,000,000;
    the device trusts them (validly signed) but installs nothing unreleased.
    The honest repository's next timestamp then looks like a rollback: the device
    is frozen (refuses). The operator rotates both keys in root v2 and restarts
    the versions at 1: the device drops the fast-forwarded metadata (not signed by
    the new keys) and installs. Served again afterwards, the attacker's
    fast-forwarded metadata (old keys) is refused."""
    image = fleet.image
    v11 = release("1.1.0", release_counter=200)
    fleet.offer_release(release("6.6.6", release_counter=1, in_image_repo=False))
    image.snapshot.signed.version = 10**6 - 1
    image.publish(timestamp_version=10**6)
    fast_forwarded = image.files["timestamp.json"]
    assert "not in the image repository" in _refused(device, fleet)

    image.snapshot.signed.version = 10
    image.publish(timestamp_version=11)
    fleet.offer_release(v11, deployment_id="dep-2")
    assert "BadVersionNumberError" in _refused(device, fleet, "dep-2")
    assert_on_committed_slot(device)

    image.rotate_root(snapshot=signer(), timestamp=signer())
    image.snapshot.signed.version = 0
    image.publish(timestamp_version=1)
    _install(device, fleet, v11, "dep-3")

    fleet.offer_release(release("1.2.0", release_counter=300), deployment_id="dep-4")
    fleet.overrides[("image", "timestamp.json")] = fast_forwarded
    assert "UnsignedMetadataError" in _refused(device, fleet, "dep-4")
    assert_on_committed_slot(device, "1.1.0")


def test_indefinite_freeze(device: SimulatedDevice, fleet: FleetState, release: Releaser) -> None:
    """Indefinite freeze: the attacker keeps serving metadata past its expiry (here
    a timestamp that expired an hour ago), so the device would never learn of newer
    releases. The device refuses expired metadata."""
    fleet.offer_release(release("1.1.0", release_counter=200))
    fleet.image.timestamp.signed.expires = in_days(-1 / 24)
    fleet.image.publish()

    assert "ExpiredMetadataError" in _refused(device, fleet)
    assert_on_committed_slot(device)


def test_endless_data(device: SimulatedDevice, fleet: FleetState, release: Releaser) -> None:
    """Endless data: the attacker answers with more bytes than allowed. A timestamp
    padded past the 16 KiB maximum is cut off and refused; an artifact that goes on
    after its signed length (no Content-Length, read to the close) is refused before
    the trial boot is armed, as is an offer that claims a larger artifact."""
    v11 = release("1.1.0", release_counter=200)
    fleet.offer_release(v11)
    real = fleet.image.files["timestamp.json"]
    fleet.overrides[("image", "timestamp.json")] = real[:-1] + b" " * 20_000 + real[-1:]
    assert "metadata longer than its signed length or maximum" in _refused(device, fleet)
    assert_on_committed_slot(device)
    fleet.overrides.clear()

    fleet.offer_release(v11, deployment_id="dep-2")
    fleet.no_content_length = True
    fleet.rewrite_artifact = lambda data: data + b"\0" * (1024 * 1024)
    assert "more than the artifact's signed length" in _refused(device, fleet, "dep-2")
    assert_on_committed_slot(device)

    offer = fleet.offer_release(v11, deployment_id="dep-3")
    offer["artifact_size"] += 1024 * 1024
    assert "is not acme-fw/1.1.0.fca" in _refused(device, fleet, "dep-3")
    assert_on_committed_slot(device)


def test_extraneous_dependencies(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """Extraneous dependencies: the attacker adds its own target to the hash bin that
    covers it, signs the bin with the online snapshot key it holds (the bin is
    delegated to the vendor's offline targets keys) and lists it in a new snapshot.
    The device refuses the bin: not signed by the role it is delegated to."""
    evil = release("6.6.6", release_counter=10**9, in_image_repo=False)
    image = fleet.image
    image.add_target(evil.target)
    image.publish(role_signers={image.bin_for(evil.target.path): [fleet.keys.snapshot]})
    fleet.offer_release(evil)

    message = _refused(device, fleet)
    assert "UnsignedMetadataError" in message and "bins-" in message
    assert_on_committed_slot(device)


def test_mix_and_match(device: SimulatedDevice, fleet: FleetState, release: Releaser) -> None:
    """Mix-and-match: the vendor withdrew 1.1.0 from its bin. The attacker serves the
    current timestamp and snapshot with the bin from an older snapshot (which still
    lists 1.1.0) under the current bin's name: a combination never published. The
    snapshot's version, length and hash for the bin do not match: refused."""
    v11 = release("1.1.0", release_counter=200)
    image = fleet.image
    name = image.bin_for(v11.target.path)
    old_bin = image.files[f"{image.bins[name].signed.version}.{name}.json"]
    del image.bins[name].signed.targets[v11.target.path]
    image._dirty.add(name)
    image.publish()
    fleet.overrides[("image", f"{image.bins[name].signed.version}.{name}.json")] = old_bin
    fleet.offer_release(v11)

    message = _refused(device, fleet)
    # The bin is longer than the snapshot says (else its hash or version would differ).
    assert "metadata longer than its signed length" in message
    assert_on_committed_slot(device)


def test_wrong_software(device: SimulatedDevice, fleet: FleetState, release: Releaser) -> None:
    """Wrong software: the attacker directs the device (an ``acme-gw``) to an image the
    vendor really released, but for another device type (``acme-cam``). The signed
    ``compatible`` list does not name the device's type: refused."""
    cam = release("1.1.0", release_counter=200, compatible=("acme-cam",))
    fleet.offer_release(cam)

    assert "released for acme-cam, not for acme-gw" in _refused(device, fleet)
    assert_on_committed_slot(device)


def test_malicious_mirror(device: SimulatedDevice, fleet: FleetState, release: Releaser) -> None:
    """Malicious mirror: the metadata is honest, but the server rewrites the artifact
    bytes it serves, here one byte of the tar padding after the payload, which no
    payload hash covers. The whole file's sha256 differs from the target's: refused
    before the trial boot is armed. An offer whose manifest is not the released one
    is refused before the download."""
    v11 = release("1.1.0", release_counter=200)
    fleet.offer_release(v11)

    def flip_last(data: bytes) -> bytes:
        return data[:-1] + bytes([data[-1] ^ 0x01])

    fleet.rewrite_artifact = flip_last
    message = _refused(device, fleet)
    assert "sha256" in message and hashlib.sha256(flip_last(v11.data)).hexdigest() in message
    assert_on_committed_slot(device)

    fleet.rewrite_artifact = None
    # Same name and version, another signed manifest (a payload field differs).
    other = release("1.1.0", release_counter=200, in_image_repo=False, meta={"evil": "1"})
    offer = fleet.offer_release(v11, deployment_id="dep-2")
    offer["manifest"] = other.manifest.to_dict()
    assert "is not the released one" in _refused(device, fleet, "dep-2")
    assert_on_committed_slot(device)


def test_key_compromise_below_threshold(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """Key compromise below threshold: root and targets need 2 of 2 signatures. With one
    stolen root key the attacker signs a root v2 that hands the targets role to its own
    key: the device does not walk to it. With one stolen targets key it signs a bin
    listing its artifact: the device refuses the bin."""
    image, keys = fleet.image, fleet.keys
    evil = release("6.6.6", release_counter=10**9, in_image_repo=False)
    fleet.offer_release(evil)
    attacker = signer()
    evil_root = copy.deepcopy(image.root)
    evil_root.signed.version = 2
    for keyid in list(evil_root.signed.roles["targets"].keyids):
        evil_root.signed.revoke_key(keyid, "targets")
    evil_root.signed.add_key(attacker.public_key, "targets")
    evil_root.signed.roles["targets"].threshold = 1
    evil_root.signatures.clear()
    evil_root.sign(keys.root[0])
    evil_root.sign(attacker, append=True)
    fleet.overrides[("image", "2.root.json")] = evil_root.to_bytes()
    assert "UnsignedMetadataError" in _refused(device, fleet)
    assert_on_committed_slot(device)

    fleet.overrides.clear()
    image.add_target(evil.target)
    image.publish(role_signers={image.bin_for(evil.target.path): [keys.targets[0]]})
    fleet.offer_release(evil, deployment_id="dep-2")
    message = _refused(device, fleet, "dep-2")
    assert "UnsignedMetadataError" in message and "bins-" in message
    assert_on_committed_slot(device)


def test_replayed_director_metadata(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """Replayed director metadata: the attacker keeps director targets the server signed
    earlier, for a nonce the device reported then, still unexpired, directing the device
    to a vendor-released image. The device's new version report carries a new nonce;
    the replayed metadata answers the old one: refused."""
    fleet.offer_release(release("6.6.6", release_counter=1, in_image_repo=False))
    assert "not in the image repository" in _refused(device, fleet)
    old_nonce = fleet.version_reports[-1]["signed"]["nonce"]

    v11 = release("1.1.0", release_counter=200)
    fleet.offer_release(v11, deployment_id="dep-2")
    fleet.direct(old_nonce)
    fleet.director_frozen = True

    message = _refused(device, fleet, "dep-2")
    assert f"answers nonce '{old_nonce}'" in message and "replayed" in message
    assert fleet.version_reports[-1]["signed"]["nonce"] != old_nonce
    assert_on_committed_slot(device)


def test_a_target_listed_only_by_the_director_is_not_enough(
    device: SimulatedDevice, fleet: FleetState, release: Releaser
) -> None:
    """The director (online key) lists the released path but with another file's length
    and hash: the repositories disagree, refused."""
    v11 = release("1.1.0", release_counter=200)
    fleet.offer_release(v11)
    forged = make_target(b"x" * 1000, v11.manifest, compatible=["acme-gw"], release_counter=200)
    fleet.offered_target = forged

    assert "the director says 1000 bytes" in _refused(device, fleet)
    assert_on_committed_slot(device)
