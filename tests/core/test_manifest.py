"""Manifests validate strictly, round-trip unknown fields and decide compatibility."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.core.canonical import canonical_json
from fleetcast.core.manifest import Manifest, SignedManifest
from fleetcast.exceptions import (
    DowngradeError,
    IncompatibleError,
    SignatureError,
    ValidationError,
)

SHA = "ab" * 32


def manifest_dict(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "format": 1,
        "name": "acme-fw",
        "version": "1.1.0",
        "compatible": ["acme-gw"],
        "payloads": [
            {
                "name": "rootfs",
                "type": "rootfs-image",
                "size": 10,
                "sha256": SHA,
                "compressed_size": 5,
                "compressed_sha256": SHA,
                "meta": {},
            }
        ],
        "depends": {},
        "provides": {},
        "description": "",
    }
    data.update(overrides)
    return data


def test_round_trip_keeps_unknown_fields_so_newer_manifests_still_verify() -> None:
    data = manifest_dict(future_field={"x": [1, 2]})
    manifest = Manifest.from_dict(data)
    assert manifest.unrecognized_fields == {"future_field": {"x": [1, 2]}}
    assert canonical_json(manifest.to_dict()) == canonical_json(data)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"name": ""}, "valid name"),
        ({"version": "1.1"}, "semantic version"),
        ({"compatible": []}, "at least one device type"),
        ({"payloads": []}, "at least one payload"),
        ({"format": 2}, "unsupported format"),
        ({"depends": {"version": "~1"}}, "bad version constraint"),
    ],
)
def test_invalid_manifests_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Manifest.from_dict(manifest_dict(**overrides))


def test_payload_fields_are_validated() -> None:
    bad = manifest_dict()
    bad["payloads"][0]["sha256"] = "nothex"
    with pytest.raises(ValidationError, match="sha256"):
        Manifest.from_dict(bad)
    bad = manifest_dict()
    bad["payloads"][0]["type"] = "firmware-blob"
    with pytest.raises(ValidationError, match="type"):
        Manifest.from_dict(bad)
    bad = manifest_dict()
    bad["payloads"][0]["size"] = -1
    with pytest.raises(ValidationError, match="size"):
        Manifest.from_dict(bad)


def test_rootfs_image_must_stand_alone() -> None:
    data = manifest_dict()
    extra = copy.deepcopy(data["payloads"][0])
    extra["name"] = "config"
    extra["type"] = "files"
    data["payloads"].append(extra)
    with pytest.raises(ValidationError, match="only payload"):
        Manifest.from_dict(data)


def test_compatibility_rules() -> None:
    m = Manifest.from_dict(manifest_dict(depends={"version": ">=1.0.0"}))
    m.check_compatible(device_type="acme-gw", installed_version="1.0.0")
    with pytest.raises(IncompatibleError, match="not 'other-board'"):
        m.check_compatible(device_type="other-board", installed_version="1.0.0")
    with pytest.raises(IncompatibleError, match="needs installed version"):
        m.check_compatible(device_type="acme-gw", installed_version="0.9.0")
    with pytest.raises(DowngradeError):
        m.check_compatible(device_type="acme-gw", installed_version="1.2.0")


def test_downgrade_only_when_explicitly_allowed() -> None:
    m = Manifest.from_dict(manifest_dict(version="1.0.0"))
    with pytest.raises(DowngradeError, match="does not allow downgrades"):
        m.check_compatible(device_type="acme-gw", installed_version="1.1.0")
    m.check_compatible(device_type="acme-gw", installed_version="1.1.0", allow_downgrade=True)


def test_signed_manifest_verifies_only_with_the_trusted_key() -> None:
    vendor, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    signed = SignedManifest.create(Manifest.from_dict(manifest_dict()), vendor)
    parsed = SignedManifest.from_dict(signed.to_dict())
    assert parsed.verify([vendor.public_key()]) == signed.signatures[0].keyid
    with pytest.raises(SignatureError, match="untrusted"):
        parsed.verify([attacker.public_key()])


def test_tampered_manifest_fails_verification() -> None:
    vendor = Ed25519PrivateKey.generate()
    envelope = SignedManifest.create(Manifest.from_dict(manifest_dict()), vendor).to_dict()
    envelope["signed"]["compatible"] = ["acme-gw", "other-board"]
    with pytest.raises(SignatureError, match="does not verify"):
        SignedManifest.from_dict(envelope).verify([vendor.public_key()])


def test_unsigned_manifest_is_refused() -> None:
    envelope = {"signed": manifest_dict(), "signatures": []}
    with pytest.raises(SignatureError, match="not signed"):
        SignedManifest.from_dict(envelope).verify([Ed25519PrivateKey.generate().public_key()])


def test_floats_cannot_be_signed() -> None:
    with pytest.raises(ValidationError, match="floats"):
        canonical_json({"a": 1.5})


@pytest.mark.parametrize(
    ("meta", "ok"),
    [
        ({"handler": "deb"}, True),
        ({"handler": "acme-fw.v2_x"}, True),
        ({}, False),
        ({"handler": ""}, False),
        ({"handler": "../../bin/sh"}, False),
        ({"handler": "/usr/bin/deb"}, False),
        ({"handler": ".hidden"}, False),
        ({"handler": "Deb"}, False),
        ({"handler": "x" * 65}, False),
    ],
)
def test_module_payload_names_a_plain_handler(meta: dict[str, str], ok: bool) -> None:
    """A module payload names its handler, a file name in the device's modules directory:
    never a path, so a signed manifest cannot point the agent at an arbitrary program."""
    data = manifest_dict()
    data["payloads"][0].update(name="tool", type="module", meta=meta)
    if ok:
        manifest = Manifest.from_dict(data)
        assert manifest.payloads[0].meta["handler"] == meta["handler"]
        assert Manifest.from_dict(manifest.to_dict()) == manifest
    else:
        with pytest.raises(ValidationError, match="handler"):
            Manifest.from_dict(data)


def test_module_payloads_combine_with_files_and_scripts() -> None:
    data = manifest_dict()
    module = data["payloads"][0]
    module.update(name="tool", type="module", meta={"handler": "deb"})
    conf = copy.deepcopy(module)
    conf.update(name="conf", type="files", meta={"dest": "/etc/acme"})
    data["payloads"].append(conf)
    assert [p.type for p in Manifest.from_dict(data).payloads] == ["module", "files"]
