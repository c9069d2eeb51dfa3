from __future__ import annotations

from pathlib import Path

import pytest

from fleetcast.trust.offline import expiry
from fleetcast.trust.operations import InitOptions, init_dir
from tests.trust.tufrepo import OnlineSigner


@pytest.fixture
def online() -> OnlineSigner:
    return OnlineSigner()


@pytest.fixture
def keydir(tmp_path: Path, online: OnlineSigner) -> Path:
    """A key directory with 3 root keys (threshold 2), 2 targets keys (threshold 1)
    and 4 bins: small enough to read, big enough to show the structure."""
    path = tmp_path / "keys"
    opts = InitOptions(
        root_keys=3, root_threshold=2, targets_keys=2, targets_threshold=1, bin_bits=2,
        expires=expiry(30),
    )  # fmt: skip
    init_dir(path, opts, online.keys())
    return path
