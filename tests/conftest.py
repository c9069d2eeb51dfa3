"""Fixtures shared by every test area."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import BuiltArtifact, make_artifact


@pytest.fixture(scope="session")
def vendor_key() -> Ed25519PrivateKey:
    """The vendor's artifact-signing key (devices trust its public half)."""
    return Ed25519PrivateKey.generate()


@pytest.fixture
def artifact_v1(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> BuiltArtifact:
    return make_artifact(tmp_path / "artifacts", vendor_key, version="1.0.0")


@pytest.fixture
def artifact_v2(tmp_path: Path, vendor_key: Ed25519PrivateKey) -> BuiltArtifact:
    return make_artifact(tmp_path / "artifacts", vendor_key, version="1.1.0")
