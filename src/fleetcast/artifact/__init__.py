"""Fleetcast artifacts: one signed file holding a manifest and zstd payloads.

Public API: build, read and verify artifacts, and the streaming pieces the
agent uses to install while downloading.
"""

from __future__ import annotations

from fleetcast.artifact._build import (
    Encryption,
    VerifiedArtifact,
    build_artifact,
    read_manifest,
    verify_artifact,
)
from fleetcast.artifact._format import (
    FRAME_SIZE,
    ArtifactReader,
    PayloadDecoder,
    PayloadEntry,
    PayloadSource,
    decode_payload,
    payload_member_name,
    resume_offset,
)

__all__ = [
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
]
