"""The per-process memory of devices' answers, so that most ``/next`` read no database.

Most check-ins of a large fleet ask "anything for me?" and get "nothing"
again. Answering that from the database costs a device lookup and a
membership query per poll; answering it from memory costs an HMAC check.
When a deployment phase starts, every device it wakes asks at once, and
each would get the same offer: those are remembered too, a whole phase in
one bulk read (:mod:`fleetcast.server.priming`).

An entry says "device X was accepted, and this was its answer" (nothing to
do, or an offer that cannot change until a notification names X), as of the
last database read for X. It is dropped when

* a notification names X (a deployment or phase started for it, a pause,
  resume or abort, its own status report, an operator changed its status:
  everything that can change its answer or its admission goes through the
  :class:`~fleetcast.server.notify.Notifier`, which every process receives),
* every notification may have been missed (the PostgreSQL listener
  reconnected: the whole cache is dropped),
* it is older than ``ttl`` seconds (a safety net), or
* it is the least recently used one and the cache is full (``size``).

Only answers that nothing but a notification can change are remembered:
"nothing to do", and full-artifact offers to devices that can get no delta
and need no per-device key. An offer that may carry a delta depends on
delta generation and time (``delta_wait``), and is always computed from the
database.

Downloads are authorised from the same kind of memory: the devices last
found accepted (dropped by the same notifications, so a rejected or
decommissioned device is refused again at once), and the blob of each
artifact (content-addressed, so it never changes; a short TTL bounds a
deleted one). Not the offer: a device may fetch any artifact it is allowed
to, as before.

An entry also keeps the last bearer token verified for its device, so a
device polling with the same token again costs a string comparison, not an
HMAC. :class:`RememberedPolls`, an ASGI middleware in front of the application,
answers such a poll (``GET /next`` without ``wait``, or whose ``If-None-Match``
differs from the remembered answer) with pre-encoded bytes before FastAPI's
routing, dependency injection and JSON encoding: everything else, including
every error, long-polls and devices not remembered, goes on to the route.

A database read and a notification can race: a request reads "nothing",
the deployment commits and notifies, and only then the request stores its
stale "nothing". :attr:`AnswerCache.generation` closes that window: a
request takes the generation before it reads, and :meth:`AnswerCache.put`
ignores the entry if any notification arrived in between. A bulk read
(:meth:`AnswerCache.reading`) takes many seconds while status reports keep
notifying: it skips only the devices notified meanwhile.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from fleetcast.core.wire import UpdateOffer
from fleetcast.server.errors import UnauthorizedError
from fleetcast.server.services.credentials import DeviceTokenSigner

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from fleetcast.server.runtime import ServerState


@dataclass(frozen=True, slots=True)
class Answer:
    """A pre-encoded ``/next`` answer: its JSON body and its quoted ETag.

    ``update``: whether the body offers an update (else it says "nothing").
    """

    body: bytes
    etag: str
    update: bool


@dataclass(slots=True)
class Entry:
    """One remembered device: when the entry expires, its last-seen time as last
    recorded, its answer (None for an entry that only admits downloads), and the
    last token verified for it (with that token's expiry, Unix seconds)."""

    expires: float
    last_seen: dt.datetime | None
    answer: Answer | None = None
    token: str = ""
    token_expiry: int = 0


@dataclass
class Reading:
    """A bulk read in progress: the devices notified since it began."""

    notified: set[str] = field(default_factory=set)
    everything: bool = False

    def stale(self, device_id: str) -> bool:
        return self.everything or device_id in self.notified


class AnswerCache:
    """Devices known to be accepted, and their answers (see the module docstring).

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
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        #: Devices last found accepted (idle or not), for download authorisation.
        self._admitted: OrderedDict[str, Entry] = OrderedDict()
        self._files: OrderedDict[str, tuple[float, ArtifactFile]] = OrderedDict()
        #: Incremented by every invalidation; see :meth:`put`.
        self.generation = 0
        self._readings: list[Reading] = []

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, device_id: str) -> Entry | None:
        """The device's entry if it is still valid, else None."""
        return self._valid(self._entries, device_id)

    def _valid(self, entries: OrderedDict[str, Entry], device_id: str) -> Entry | None:
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
    ) -> Entry | None:
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
        if generation == self.generation:
            self._store(self._admitted, device_id, None, None)

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
        entries: OrderedDict[str, Entry],
        token: str,
        signer: DeviceTokenSigner,
        now: float | None,
    ) -> Entry | None:
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

    def put(
        self, device_id: str, last_seen: dt.datetime | None, generation: int, answer: Answer
    ) -> None:
        """Remember a device's answer, read from the database at ``generation``.

        Nothing is stored when an invalidation happened since that read
        began: the read may predate the change the invalidation announced.
        """
        if generation == self.generation:
            self._store(self._entries, device_id, last_seen, answer)

    @contextmanager
    def reading(self) -> Iterator[Reading]:
        """Mark a bulk read: :meth:`put_read` then skips the devices notified meanwhile."""
        reading = Reading()
        self._readings.append(reading)
        try:
            yield reading
        finally:
            self._readings.remove(reading)

    def put_read(
        self, reading: Reading, device_id: str, last_seen: dt.datetime | None, answer: Answer
    ) -> None:
        """Remember a device's answer and admission, found by the bulk ``reading``."""
        if not reading.stale(device_id):
            self._store(self._entries, device_id, last_seen, answer)
            self._store(self._admitted, device_id, None, None)

    def _store(
        self,
        entries: OrderedDict[str, Entry],
        device_id: str,
        last_seen: dt.datetime | None,
        answer: Answer | None,
    ) -> None:
        if self.size <= 0:
            return
        entries[device_id] = Entry(self._clock() + self.ttl, last_seen, answer)
        entries.move_to_end(device_id)
        while len(entries) > self.size:
            entries.popitem(last=False)

    def invalidate(self, device_ids: Iterable[str] | None) -> None:
        """Forget these devices (None: every device)."""
        self.generation += 1
        if device_ids is None:
            self._entries.clear()
            self._admitted.clear()
            for reading in self._readings:
                reading.everything = True
            return
        ids = list(device_ids)
        for device_id in ids:
            self._entries.pop(device_id, None)
            self._admitted.pop(device_id, None)
        for reading in self._readings:
            reading.notified.update(ids)


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


class RememberedPolls:
    """ASGI middleware: answers a remembered device's ``GET path`` from memory.

    The answer is exactly the route's (same status, ``ETag``,
    ``Cache-Control``, body), pre-encoded when it was remembered. Only polls
    that would be answered at once go here: a long-poll whose answer has
    not changed is held by the route (which too looks at the memory first).

    Args:
        app: the application behind.
        path: the ``/next`` path.
    """

    def __init__(self, app: ASGIApp, *, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == "GET":
            found = self._answer(scope)
            if found is not None:
                answer, unchanged = found
                headers = [
                    (b"etag", answer.etag.encode("latin-1")),
                    (b"cache-control", b"private, no-cache"),
                ]
                if not unchanged:
                    headers[:0] = [
                        (b"content-length", str(len(answer.body)).encode()),
                        (b"content-type", b"application/json"),
                    ]
                await send(
                    {
                        "type": "http.response.start",
                        "status": 304 if unchanged else 200,
                        "headers": headers,
                    }
                )
                await send(
                    {"type": "http.response.body", "body": b"" if unchanged else answer.body}
                )
                return
        await self.app(scope, receive, send)

    def _answer(self, scope: Scope) -> tuple[Answer, bool] | None:
        """The remembered answer and whether it equals ``If-None-Match`` (then 304),
        or None when the route must answer."""
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
        entry = state.answers.for_token(token, state.admission.signer)
        if entry is None or entry.answer is None:
            return None
        answer = entry.answer
        if if_none_match is not None:
            unchanged = etag_matches(if_none_match, answer.etag)
            if unchanged and wait > 0:
                return None  # a long-poll: the route waits for a change
        elif wait > 0 and not answer.update:
            return None  # a long-poll without a validator waits for an update
        else:
            unchanged = False
        device_id = token.partition(".")[0]
        # Batched in memory: a remembered poll writes nothing (fleetcast.server.lastseen).
        entry.last_seen = state.last_seen.seen(device_id, entry.last_seen, None) or (
            entry.last_seen
        )
        return answer, unchanged


def encode_answer(offer: UpdateOffer | None) -> Answer:
    """The ``/next`` answer for ``offer`` (None: nothing to do), as the device API sends it."""
    document: dict[str, Any] = {"update": offer.to_dict() if offer else None}
    body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return Answer(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"', offer is not None)


#: "Nothing to do", the answer an idle device gets again and again.
IDLE: Final = encode_answer(None)
