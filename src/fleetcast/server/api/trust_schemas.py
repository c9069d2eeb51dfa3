"""Pydantic schemas of the TUF endpoints (ADR 0008): management summary, uploads, reports.

Metadata files themselves are never modelled here: they are served and
accepted as exact bytes, and python-tuf validates them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field


class RoleOut(BaseModel):
    keyids: list[str]
    threshold: int


class RootOut(BaseModel):
    version: int
    expires: dt.datetime
    roles: dict[str, RoleOut]


class SignedFileOut(BaseModel):
    version: int
    expires: dt.datetime


class ImageRepositoryOut(BaseModel):
    set_up: bool = Field(description="An image root was uploaded.")
    root: RootOut | None = None
    versions: dict[str, int] = Field(description="Newest stored version of each role.")
    bins: int = 0
    targets: int = Field(default=0, description="Targets listed by the current bins.")
    snapshot: SignedFileOut | None = None
    timestamp: SignedFileOut | None = None


class DirectorRepositoryOut(BaseModel):
    set_up: bool = Field(description="A director root was uploaded.")
    root: RootOut | None = None
    versions: dict[str, int]


class OnlineKeyStateOut(BaseModel):
    active: str = Field(description="Key id the server signs with.")
    pending: str | None = Field(
        description="Key id created by a rotation, active once a root lists it."
    )


class TufSummaryOut(BaseModel):
    image: ImageRepositoryOut
    director: DirectorRepositoryOut
    online_keys: dict[str, OnlineKeyStateOut]


class StoredMetadataOut(BaseModel):
    """An accepted upload."""

    repo: str
    role: str
    version: int
    expires: dt.datetime
    length: int
    sha256: str


class RotatedKeyOut(BaseModel):
    role: str
    created: bool = Field(description="False: a rotation was pending already; that key is kept.")
    active: dict[str, Any] = Field(description="TUF key object the server signs with now.")
    pending: dict[str, Any] = Field(description="TUF key object a new root must list.")


class NonceOut(BaseModel):
    nonce: str = Field(description="32 hex digits, single use.")


class InstalledIn(BaseModel):
    target: str | None
    sha256: str | None
    release_counter: int = Field(ge=0, le=2**62)


class VersionReportSignedIn(BaseModel):
    device_id: str
    nonce: str
    time: int
    installed: InstalledIn


class VersionReportIn(BaseModel):
    """``POST /api/device/v1/tuf/version-report`` (the body is read raw: ``signed`` is signed)."""

    signed: VersionReportSignedIn
    signatures: list[dict[str, str]] = Field(min_length=1)


class VersionReportOut(BaseModel):
    """The last version report a device signed and the server accepted (device view)."""

    received_at: dt.datetime
    time: int = Field(description="The device's clock when it signed, unix seconds.")
    nonce: str
    installed_target: str | None
    installed_sha256: str | None
    release_counter: int
    report: dict[str, Any] = Field(description="The signed report as sent.")


__all__ = [
    "DirectorRepositoryOut",
    "ImageRepositoryOut",
    "NonceOut",
    "OnlineKeyStateOut",
    "RootOut",
    "RotatedKeyOut",
    "SignedFileOut",
    "StoredMetadataOut",
    "TufSummaryOut",
    "VersionReportIn",
    "VersionReportOut",
]
