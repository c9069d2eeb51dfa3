"""The record of artifacts installed in place, and what the inventory reports."""

from __future__ import annotations

from pathlib import Path

from fleetcast.agent.inventory import InstalledVersions, installed_as, make_inventory
from fleetcast.agent.slots import SlotContent
from fleetcast.delta import available_engines

FW = SlotContent("acme-fw", "1.0.0")


def test_record_round_trips_and_a_corrupt_one_is_empty(tmp_path: Path) -> None:
    record = InstalledVersions(tmp_path)
    assert record.load() == {}
    record.set("acme-conf", "1.1.0")
    record.set("acme-plugin", "0.3.0")
    record.set("acme-conf", "1.2.0")
    assert InstalledVersions(tmp_path).load() == {"acme-conf": "1.2.0", "acme-plugin": "0.3.0"}
    (tmp_path / "artifacts.json").write_text("{ nope")
    broken = InstalledVersions(tmp_path)
    assert broken.load() == {} and broken.problem is not None


def test_installed_as_looks_up_by_name() -> None:
    versions = {"acme-conf": "2.0.0"}
    assert installed_as("acme-fw", FW, versions) == FW
    assert installed_as("acme-conf", FW, versions) == SlotContent("acme-conf", "2.0.0")
    assert installed_as("acme-other", FW, versions) is None
    assert installed_as("acme-fw", None, versions) is None


def test_inventory_keeps_the_root_file_system_and_lists_the_rest_as_attributes() -> None:
    inventory = make_inventory(
        device_type="acme-gw",
        attributes={"site": "berlin"},
        active_slot="b",
        running=FW,
        in_place={"acme-conf": "2.0.0"},
    )
    assert (inventory.artifact_name, inventory.artifact_version) == ("acme-fw", "1.0.0")
    assert inventory.attributes == {
        "site": "berlin",
        "fleetcast_slot": "b",
        "fleetcast_delta_engines": ",".join(available_engines()),
        "artifact.acme-conf": "2.0.0",
    }


def test_inventory_reports_the_image_hash_recorded_at_commit() -> None:
    """The server offers a delta only from the image the device really runs."""
    running = SlotContent("acme-fw", "1.0.0", 1000, "a" * 64)
    inventory = make_inventory(
        device_type="acme-gw", attributes={}, active_slot="a", running=running, in_place={}
    )
    assert inventory.attributes["fleetcast_rootfs_sha256"] == "a" * 64
