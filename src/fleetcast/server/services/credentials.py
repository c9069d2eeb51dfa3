"""Credentials: device bearer tokens, admin tokens, enrollment tokens, the server secret.

Device tokens are stateless ``<device_id>.<expiry>.<hmac>`` strings signed
with a key stored in ``server_secrets`` (created by ``prepare``), so every
server process sharing the database accepts them and none needs a token
table. They are short-lived; a rejected or decommissioned device is refused
on its next request anyway because the device row is read on each request.

Admin and enrollment tokens are random strings of which only the sha256 is
stored. An admin (management API) token has a scope: ``read-only`` (reads
only), ``operator`` (everything but managing API tokens) or ``admin``
(everything).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.exceptions import UsageError
from fleetcast.server.db.models import AdminToken, EnrollmentToken, ServerSecret, utcnow
from fleetcast.server.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnauthorizedError,
)

DEVICE_TOKEN_KEY: Final = "device_token_key"  # noqa: S105  # a row name, not a secret


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class DeviceTokenSigner:
    """Issues and checks device bearer tokens with the server's HMAC key."""

    key: bytes

    def issue(self, device_id: str, ttl: int, *, now: float | None = None) -> str:
        expiry = int(now if now is not None else time.time()) + ttl
        return f"{device_id}.{expiry}.{self._mac(device_id, expiry)}"

    def verify(self, token: str, *, now: float | None = None) -> str:
        """Return the device id a valid, unexpired token names.

        Raises:
            UnauthorizedError: the token is malformed, forged or expired.
        """
        parts = token.split(".")
        # Only ASCII: str.isdigit() accepts other scripts' digits, and
        # compare_digest refuses non-ASCII str; both would be a 500, not a 401.
        if len(parts) != 3 or not token.isascii() or not parts[1].isdigit():
            raise UnauthorizedError("device token is malformed")
        device_id, expiry_text, mac = parts
        expiry = int(expiry_text)
        if not hmac.compare_digest(mac.encode(), self._mac(device_id, expiry).encode()):
            raise UnauthorizedError("device token is invalid")
        if expiry <= (now if now is not None else time.time()):
            raise UnauthorizedError("device token has expired; authenticate again")
        return device_id

    def _mac(self, device_id: str, expiry: int) -> str:
        message = f"{device_id}.{expiry}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()


async def ensure_device_token_key(session: AsyncSession) -> bool:
    """Create the device-token HMAC key unless it exists; return whether it was created."""
    if await session.get(ServerSecret, DEVICE_TOKEN_KEY) is not None:
        return False
    session.add(ServerSecret(name=DEVICE_TOKEN_KEY, value=secrets.token_hex(32)))
    await session.flush()
    return True


async def load_device_token_signer(session: AsyncSession) -> DeviceTokenSigner:
    """Read the HMAC key created by ``prepare``.

    Raises:
        UsageError: the database was not prepared (run ``prepare`` first).
    """
    secret = await session.get(ServerSecret, DEVICE_TOKEN_KEY)
    if secret is None:
        raise UsageError("the server database has no device-token key: call prepare() first")
    return DeviceTokenSigner(bytes.fromhex(secret.value))


class TokenScope(enum.StrEnum):
    """What a management API token may do; each scope includes the ones before it."""

    READ_ONLY = "read-only"  # GET only
    OPERATOR = "operator"  # everything but managing API tokens
    ADMIN = "admin"  # everything


_RANK: Final = {TokenScope.READ_ONLY: 0, TokenScope.OPERATOR: 1, TokenScope.ADMIN: 2}


def scope_of(token: AdminToken) -> TokenScope:
    """The token's scope; an unknown stored value counts as read-only (least privilege)."""
    try:
        return TokenScope(token.scope)
    except ValueError:
        return TokenScope.READ_ONLY


def require_scope(token: AdminToken, needed: TokenScope) -> None:
    """Refuse a request the token's scope does not cover.

    Raises:
        ForbiddenError: the token's scope is below ``needed``.
    """
    have = scope_of(token)
    if _RANK[have] < _RANK[needed]:
        raise ForbiddenError(
            f"this request needs a token with scope {needed.value!r}; "
            f"token {token.name!r} has scope {have.value!r}",
            details={"scope": have.value, "required": needed.value},
        )


async def issue_admin_token(
    session: AsyncSession, name: str, scope: TokenScope = TokenScope.ADMIN
) -> tuple[AdminToken, str]:
    """Create a management API token; return its row and plaintext (stored only as a hash)."""
    token = "fca_" + secrets.token_urlsafe(32)
    row = AdminToken(
        id=str(uuid.uuid4()), token_hash=hash_token(token), name=name, scope=scope.value
    )
    session.add(row)
    await session.flush()
    return row, token


async def create_admin_token(session: AsyncSession, name: str, scope: str = "admin") -> str:
    """Create an admin token; return its plaintext (stored only as a hash)."""
    _row, token = await issue_admin_token(session, name, TokenScope(scope))
    return token


async def list_admin_tokens(session: AsyncSession) -> list[AdminToken]:
    """Every management API token, oldest first (never their plaintext)."""
    rows = await session.scalars(select(AdminToken).order_by(AdminToken.created_at, AdminToken.id))
    return list(rows)


async def revoke_admin_token(session: AsyncSession, token_id: str) -> None:
    """Delete a management API token; requests made with it fail from now on.

    Raises:
        NotFoundError: no such token.
        ConflictError: it is the last ``admin`` token (nobody could manage tokens any more).
    """
    row = await session.get(AdminToken, token_id)
    if row is None:
        raise NotFoundError(f"token {token_id} not found", details={"token_id": token_id})
    if scope_of(row) == TokenScope.ADMIN:
        admins = await session.scalar(
            select(func.count()).where(AdminToken.scope == TokenScope.ADMIN.value)
        )
        if int(admins or 0) <= 1:
            raise ConflictError(
                "cannot revoke the last admin token", details={"token_id": token_id}
            )
    await session.delete(row)
    await session.commit()


async def has_admin_token(session: AsyncSession) -> bool:
    return (await session.scalar(select(AdminToken.id).limit(1))) is not None


async def check_admin_token(session: AsyncSession, token: str | None) -> AdminToken:
    """Return the admin token row for a bearer token.

    Raises:
        UnauthorizedError: no token, or not a known admin token.
    """
    if not token:
        raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <admin token>'")
    row = await session.scalar(select(AdminToken).where(AdminToken.token_hash == hash_token(token)))
    if row is None:
        raise UnauthorizedError("unknown admin token")
    return row


async def create_enrollment_token(
    session: AsyncSession, *, expires_in: int, tags: list[str]
) -> tuple[str, dt.datetime]:
    """Create an enrollment token; return its plaintext and expiry.

    A token may be used by any number of devices until it expires (one token
    baked into a production batch); each device it admits gets ``tags``.
    """
    token = "fce_" + secrets.token_urlsafe(32)
    expires_at = utcnow() + dt.timedelta(seconds=expires_in)
    session.add(
        EnrollmentToken(
            id=str(uuid.uuid4()),
            token_hash=hash_token(token),
            tags=sorted(set(tags)),
            expires_at=expires_at,
        )
    )
    await session.commit()
    return token, expires_at


async def find_enrollment_token(session: AsyncSession, token: str) -> EnrollmentToken | None:
    """Return the unexpired enrollment token matching ``token``, if any."""
    row = await session.scalar(
        select(EnrollmentToken).where(EnrollmentToken.token_hash == hash_token(token))
    )
    if row is None or row.expires_at <= utcnow():
        return None
    return row
