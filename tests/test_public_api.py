"""Each package exports a small, deliberate public surface."""

from __future__ import annotations

import importlib

import pytest

import fleetcast.exceptions

PUBLIC = {
    "fleetcast.artifact": {
        "FRAME_SIZE",
        "ArtifactReader",
        "Encryption",
        "PayloadDecoder",
        "PayloadEntry",
        "PayloadSource",
        "VerifiedArtifact",
        "build_artifact",
        "decode_payload",
        "payload_member_name",
        "read_manifest",
        "resume_offset",
        "verify_artifact",
    },
    "fleetcast.delta": {
        "ENGINES",
        "DeltaHeader",
        "DeltaLimits",
        "DeltaParams",
        "EngineOptions",
        "ImageRef",
        "apply_delta",
        "available_engines",
        "generate_delta",
        "hash_image",
        "parse_header",
    },
    "fleetcast.sim": {"ServerThread", "SimulatedFleet"},
    "fleetcast.server": {"Settings", "create_app", "prepare"},
}


@pytest.mark.parametrize(("module", "names"), sorted(PUBLIC.items()))
def test_all_is_exactly_the_public_surface(module: str, names: set[str]) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == names
    for name in names:
        assert hasattr(mod, name)


def test_every_exception_descends_from_the_one_root() -> None:
    for name in fleetcast.exceptions.__all__:
        cls = getattr(fleetcast.exceptions, name)
        assert issubclass(cls, fleetcast.exceptions.FleetcastError)
        assert name.endswith("Error")
