"""ORM rows of ADR 0008's TUF image repository and Uptane-style director.

* ``tuf_keys``: the server's online keys (``snapshot``, ``timestamp``,
  ``director``). One ``active`` key per role signs; a key created by a rotation
  waits (not active, not retired) until a root listing it is uploaded.
* ``tuf_metadata``: every version of every metadata file the server serves,
  as exact bytes: the root chains of both repositories, image ``targets`` and
  bins (uploaded, signed offline), image ``snapshot`` and ``timestamp`` (signed
  here). ``length`` and ``sha256`` are those of ``data``, kept so a snapshot is
  signed without loading every bin.
* ``tuf_director``: per-device director metadata; the three roles of one
  device share one version, and the primary key (device, version) makes two
  different metadata under one version impossible, whatever the processes do.
* ``tuf_nonces``: each device's current single-use nonce.
* ``tuf_version_reports``: each device's last accepted signed version report.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from fleetcast.server.db.models import Base, utcnow


class TufKey(Base):
    """One online ed25519 key; ``private_pem`` never leaves the database."""

    __tablename__ = "tuf_keys"

    keyid: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), index=True)
    private_pem: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # The key the server signs with; at most one per role.
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when a newer key of the role became active; old metadata still names it.
    retired_at: Mapped[dt.datetime | None] = mapped_column()


class TufMetadata(Base):
    """One version of one role of one repository (``image`` or ``director``)."""

    __tablename__ = "tuf_metadata"

    repo: Mapped[str] = mapped_column(String(16), primary_key=True)
    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    length: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    expires: Mapped[dt.datetime] = mapped_column()
    # Targets listed (targets and bins only): the summary counts without parsing.
    target_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TufDirector(Base):
    """One version of one device's director ``timestamp``, ``snapshot`` and ``targets``."""

    __tablename__ = "tuf_director"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    nonce: Mapped[str | None] = mapped_column(String(64))
    # sha256 of what the metadata says (target, nonce, signing key): a change bumps the version.
    content_sha256: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[bytes] = mapped_column(LargeBinary)
    snapshot: Mapped[bytes] = mapped_column(LargeBinary)
    targets: Mapped[bytes] = mapped_column(LargeBinary)
    expires: Mapped[dt.datetime] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TufNonce(Base):
    """The device's current nonce: single use, replaced by the next one issued."""

    __tablename__ = "tuf_nonces"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    nonce: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TufVersionReport(Base):
    """The last version report a device signed and the server accepted."""

    __tablename__ = "tuf_version_reports"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    nonce: Mapped[str] = mapped_column(String(64))
    # The whole envelope as sent ({"signed", "signatures"}): the proof, for an auditor.
    report: Mapped[dict[str, Any]] = mapped_column()
    installed_target: Mapped[str | None] = mapped_column(String(300))
    installed_sha256: Mapped[str | None] = mapped_column(String(64))
    release_counter: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_time: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


__all__ = ["TufDirector", "TufKey", "TufMetadata", "TufNonce", "TufVersionReport"]
