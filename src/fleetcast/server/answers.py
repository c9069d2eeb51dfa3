"""The per-process memory of idle devices, so that an idle ``/next`` reads no database.

Most check-ins of a large fleet ask "anything for me?" and get "nothing"
again. Answering that from the database costs a device lookup and a
membership query per poll; answering it from memory costs an HMAC check.

An entry says "device X was accepted and had nothing to do", as of the last
database read for X. It is dropped when

* a notification names X (a deployment or phase started for it, a pause,
  resume or abort, its own status report, an operator changed its status:
  everything that can change its answer or its admission goes through the
  :class:`~fleetcast.server.notify.Notifier`, which every process receives),
* every notification may have been missed (the PostgreSQL listener
  reconnected: the whole cache is dropped),
* it is older than ``ttl`` seconds (a safety net), or
* it is the least recently used one and the cache is full (``size``).

Only "nothing to do" is remembered: an offer depends on delta generation and
time (``delta_wait``), and is always computed from the database.

Downloads are authorised from the same kind of memory: the devices last
found accepted (dropped by the same notifications, so a rejected or
decommissioned device is refused again at once), and the blob of each
artifact (content-addressed, so it never changes; a short TTL bounds a
deleted one). Not the offer: a device may fetch any artifact it is allowed
to, as before.

An entry also keeps the last bearer token verified for its device, so a
device polling with the same token again costs a string comparison, not an
HMAC. :class:`IdlePolls`, an ASGI middleware in front of the application,
answers such a poll (``GET /next`` without ``wait``, or whose ``If-None-Match``
differs from "nothing") with pre-encoded bytes before FastAPI's routing,
dependency injection and JSON encoding: everything else, including every
error, long-polls and devices not remembered, goes on to the route.

A database read and a notification can race: a request reads "nothing",
the deployment commits and notifies, and only then the request stores its
stale "nothing". :attr:`AnswerCache.generation` closes that window: a
request takes the generation before it reads, and :meth:`AnswerCache.put`
ignores the entry if any notification arrived in between.
"""

from __future__ import annotations

import datetime as dt
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from fleetcast.server.errors import UnauthorizedError
from fleetcast.server.services.credentials import DeviceTokenSigner

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from fleetcast.server.runtime import ServerState


@dataclass(slots=True)
class IdleEntry:
    """One idle device: when the entry expires, its last-seen time as last recorded,
    and the last token verified for it (with that token's expiry, Unix seconds)."""

    expires: float
    last_seen: dt.datetime | None
    token: str = ""
    token_expiry: int = 0


class AnswerCache:
    """Devices known to be accepted and idle (see the module docstring).

    Args:
        size: most devices remembered (least recently used ones go first);
            0 disables the cache.
        ttl: seconds an entry is trusted without a database read.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(
        self, *, size: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self.ttl = ttl
        self._clock = clock
        self._entries: OrderedDict[str, IdleEntry] = OrderedDict()
        #: Devices last found accepted (idle or not), for download authorisation.
        self._admitted: OrderedDict[str, IdleEntry] = OrderedDict()
        self._files: OrderedDict[str, tuple[float, ArtifactFile]] = OrderedDict()
        #: Incremented by every invalidation; see :meth:`put`.
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, device_id: str) -> IdleEntry | None:
        """The device's entry if it is still valid, else None."""
        return self._valid(self._entries, device_id)

    def _valid(self, entries: OrderedDict[str, IdleEntry], device_id: str) -> IdleEntry | None:
        entry = entries.get(device_id)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del entries[device_id]
            return None
        entries.move_to_end(device_id)
        return entry

    def for_token(
        self, token: str, signer: DeviceTokenSigner, *, now: float | None = None
    ) -> IdleEntry | None:
        """The entry of the idle device a valid, unexpired ``token`` names, else None.

        The token a device polled with last is remembered in its entry, so
        only a new token costs an HMAC. None means "ask the database" (the
        route then answers, and raises for a bad token).
        """
        return self._for_token(self._entries, token, signer, now)

    def admitted(
        self, token: str | None, signer: DeviceTokenSigner, *, now: float | None = None
    ) -> str | None:
        """The id of the accepted device a valid ``token`` names, if remembered, else None.

        None means "ask the database" (which also raises for a bad token).
        """
        if not token:
            return None
        entry = self._for_token(self._admitted, token, signer, now)
        return None if entry is None else token.partition(".")[0]

    def admit(self, device_id: str, generation: int) -> None:
        """Remember that the database found ``device_id`` accepted at ``generation``."""
        self._store(self._admitted, device_id, None, generation)

    def artifact_file(self, artifact_id: str) -> ArtifactFile | None:
        """The remembered blob of an artifact, or None."""
        found = self._files.get(artifact_id)
        if found is None:
            return None
        if found[0] <= self._clock():
            del self._files[artifact_id]
            return None
        return found[1]

    def remember_artifact_file(self, artifact_id: str, file: ArtifactFile) -> None:
        """Remember an artifact's blob for :data:`ARTIFACT_FILE_TTL` seconds."""
        if self.size <= 0:
            return
        self._files[artifact_id] = (self._clock() + ARTIFACT_FILE_TTL, file)
        while len(self._files) > _MAX_FILES:
            self._files.popitem(last=False)

    def _for_token(
        self,
        entries: OrderedDict[str, IdleEntry],
        token: str,
        signer: DeviceTokenSigner,
        now: float | None,
    ) -> IdleEntry | None:
        device_id, _, _ = token.partition(".")
        entry = self._valid(entries, device_id)
        if entry is None or not token.isascii():
            return None
        wall = now if now is not None else time.time()
        if entry.token_expiry > wall and hmac.compare_digest(entry.token, token):
            return entry
        try:
            signer.verify(token, now=wall)
        except UnauthorizedError:
            return None
        entry.token = token
        entry.token_expiry = int(token.split(".")[1])
        return entry

    def put(self, device_id: str, last_seen: dt.datetime | None, generation: int) -> None:
        """Remember an idle device, read from the database at ``generation``.

        Nothing is stored when an invalidation happened since that read
        began: the read may predate the change the invalidation announced.
        """
        self._store(self._entries, device_id, last_seen, generation)

    def _store(
        self,
        entries: OrderedDict[str, IdleEntry],
        device_id: str,
        last_seen: dt.datetime | None,
        generation: int,
    ) -> None:
        if self.size <= 0 or generation != self.generation:
            return
        entries[device_id] = IdleEntry(self._clock() + self.ttl, last_seen)
        entries.move_to_end(device_id)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def invalidate(self, device_ids: Iterable[str] | None) -> None:
        """Forget these devices (None: every device)."""
        self.generation += 1
        if device_ids is None:
            self._entries.clear()
            self._admitted.clear()
            return
        for device_id in device_ids:
            self._entries.pop(device_id, None)
            self._admitted.pop(device_id, None)


#: Seconds an artifact's blob is remembered: artifacts never change (their blob
#: is content-addressed), so this only bounds how long a deleted one's download
#: is still authorised (its blob is gone: nginx, S3 or this process answer 404).
ARTIFACT_FILE_TTL: Final = 60.0
#: Most artifacts remembered.
_MAX_FILES: Final = 1024


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """What a download answer needs of an artifact: its blob, digest, size and file name."""

    blob_key: str
    sha256: str
    size: int
    filename: str


def etag_matches(header: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak or strong) or is ``*``."""
    if not header:
        return False
    candidates = {c.strip().removeprefix("W/") for c in header.split(",")}
    return etag in candidates or "*" in candidates


#: Longest ``wait`` the device API accepts (the route validates; larger goes to it).
_MAX_WAIT: Final = 3600


def _wait_of(query: bytes) -> int | None:
    """The ``wait`` of a ``/next`` query string; None when the route must judge it."""
    if not query:
        return 0
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    if len(pairs) != 1 or pairs[0][0] != "wait" or not pairs[0][1].isdigit():
        return None
    wait = int(pairs[0][1])
    return wait if wait <= _MAX_WAIT else None


class IdlePolls:
    """ASGI middleware: answers a remembered idle device's ``GET path`` from memory.

    The answer is exactly the route's (same status, ``ETag``,
    ``Cache-Control``, body), pre-encoded once. Only polls that would be
    answered at once go here: with ``wait`` and nothing changed, the route
    holds the request (it too looks at the memory first).

    Args:
        app: the application behind.
        path: the ``/next`` path.
        body: the "nothing to do" body, as the route encodes it.
        etag: that body's ETag, quoted.
    """

    def __init__(self, app: ASGIApp, *, path: str, body: bytes, etag: str) -> None:
        self.app = app
        self.path = path
        self.etag = etag
        common = [(b"etag", etag.encode("latin-1")), (b"cache-control", b"private, no-cache")]
        self._not_modified = common
        self._ok = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            *common,
        ]
        self._body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == "GET":
            status = self._answer(scope)
            if status is not None:
                ok = status == 200
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": self._ok if ok else self._not_modified,
                    }
                )
                await send({"type": "http.response.body", "body": self._body if ok else b""})
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> int | None:
        """200 or 304 when memory can answer, None when the route must."""
        app: Any = scope.get("app")
        state: ServerState | None = getattr(getattr(app, "state", None), "fleetcast", None)
        if state is None:
            return None
        wait = _wait_of(scope.get("query_string", b""))
        if wait is None:
            return None
        authorization = if_none_match = None
        for name, value in scope["headers"]:
            # The first of repeated headers counts, as for the route.
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"if-none-match" and if_none_match is None:
                if_none_match = value.decode("latin-1")
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        answers = state.answers
        entry = answers.for_token(token, state.admission.signer)
        if entry is None:
            return None
        if if_none_match is not None:
            unchanged = etag_matches(if_none_match, self.etag)
            if unchanged and wait > 0:
                return None  # a long-poll: the route waits
        elif wait > 0:
            return None
        else:
            unchanged = False
        device_id = token.partition(".")[0]
        # Batched in memory: an idle poll writes nothing (fleetcast.server.lastseen).
        entry.last_seen = state.last_seen.seen(device_id, entry.last_seen, None) or (
            entry.last_seen
        )
        return 304 if unchanged else 200
