"""The server's online TUF keys: ``snapshot``, ``timestamp`` (image) and ``director``.

Each is an ed25519 key created at first use and kept in ``tuf_keys``; the
private half never leaves the database. Rotation is two-step, because a
client only trusts a key a root lists:

1. ``POST /api/v1/tuf/online-keys/{role}/rotate`` creates a *pending* key; the
   server keeps signing with the *active* one.
2. The operator signs a root listing the pending key and uploads it; accepting
   that root (:func:`switch_to`) makes the pending key active and retires the old.

:func:`keys_for_roots` is what a new root must list: the pending key of a
role while one exists, else the active one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.signer import CryptoSigner, SSlibKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.signing import private_key_from_pem, private_key_to_pem
from fleetcast.server.db.trust_models import TufKey
from fleetcast.server.errors import NotFoundError
from fleetcast.server.trust.store import KEYS_LOCK, advisory_lock
from fleetcast.trust import ONLINE_ROLES


def public_key(row: TufKey) -> SSlibKey:
    """The TUF public key of a stored key (securesystemslib's default key id)."""
    private = private_key_from_pem(row.private_pem.encode())
    return SSlibKey.from_crypto(private.public_key())


def key_dict(row: TufKey) -> dict[str, Any]:
    """The TUF key object of ``row`` (``Key.to_dict()``) with its ``keyid``."""
    return {"keyid": row.keyid, **public_key(row).to_dict()}


def signer(row: TufKey) -> CryptoSigner:
    """A python-tuf signer for a stored key."""
    private = private_key_from_pem(row.private_pem.encode())
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))


def _new_key(role: str, *, active: bool, now: dt.datetime) -> TufKey:
    private = Ed25519PrivateKey.generate()
    keyid = SSlibKey.from_crypto(private.public_key()).keyid
    return TufKey(
        keyid=keyid,
        role=role,
        private_pem=private_key_to_pem(private).decode(),
        created_at=now,
        active=active,
    )


@dataclass(frozen=True)
class RoleKeys:
    """The active key of one online role and the pending one, if a rotation is under way."""

    active: TufKey
    pending: TufKey | None

    @property
    def for_roots(self) -> TufKey:
        """The key a new root must list for this role."""
        return self.pending or self.active


def _check_role(role: str) -> None:
    if role not in ONLINE_ROLES:
        raise NotFoundError(
            f"no online role {role!r} (online roles: {', '.join(ONLINE_ROLES)})",
            details={"role": role},
        )


async def _rows(session: AsyncSession) -> list[TufKey]:
    return list(
        await session.scalars(
            select(TufKey).where(TufKey.retired_at.is_(None)).order_by(TufKey.created_at)
        )
    )


async def online_keys(session: AsyncSession, *, now: dt.datetime) -> dict[str, RoleKeys]:
    """The active and pending key of every online role, creating missing active keys.

    Keys are created under a lock so that two processes starting together do
    not each make one; the caller commits.
    """
    rows = await _rows(session)
    if not all(any(r.role == role and r.active for r in rows) for role in ONLINE_ROLES):
        await advisory_lock(session, KEYS_LOCK)
        rows = await _rows(session)
        for role in ONLINE_ROLES:
            if not any(r.role == role and r.active for r in rows):
                row = _new_key(role, active=True, now=now)
                session.add(row)
                rows.append(row)
        await session.flush()
    result = {}
    for role in ONLINE_ROLES:
        active = next(r for r in rows if r.role == role and r.active)
        pending = next((r for r in rows if r.role == role and not r.active), None)
        result[role] = RoleKeys(active, pending)
    return result


async def active_signer(session: AsyncSession, role: str, *, now: dt.datetime) -> CryptoSigner:
    """The signer of ``role``'s active key (created at first use)."""
    return signer((await online_keys(session, now=now))[role].active)


async def rotate(session: AsyncSession, role: str, *, now: dt.datetime) -> tuple[RoleKeys, bool]:
    """Create a pending key for ``role`` unless one is pending already; the caller commits.

    Returns the role's keys and whether a key was created. A pending key is
    never replaced: a root listing it may already be signed offline.

    Raises:
        NotFoundError: ``role`` is not an online role.
    """
    _check_role(role)
    await advisory_lock(session, KEYS_LOCK)
    keys = (await online_keys(session, now=now))[role]
    if keys.pending is not None:
        return keys, False
    pending = _new_key(role, active=False, now=now)
    session.add(pending)
    await session.flush()
    return RoleKeys(keys.active, pending), True


async def switch_to(session: AsyncSession, role: str, keyid: str, *, now: dt.datetime) -> bool:
    """Make ``keyid`` (listed by a root just accepted) the active key of ``role``.

    Returns whether the active key changed (it was the pending one).
    """
    await advisory_lock(session, KEYS_LOCK)
    keys = (await online_keys(session, now=now))[role]
    if keys.active.keyid == keyid or keys.pending is None or keys.pending.keyid != keyid:
        return False
    keys.active.active = False
    keys.active.retired_at = now
    keys.pending.active = True
    await session.flush()
    return True


__all__ = [
    "RoleKeys",
    "active_signer",
    "key_dict",
    "online_keys",
    "public_key",
    "rotate",
    "signer",
    "switch_to",
]
