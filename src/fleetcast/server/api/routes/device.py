"""The native device API, ``/api/device/v1`` (contract: ``docs/device-api.md``)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Annotated, Final

import pydantic
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse

from fleetcast.core.wire import Inventory, StatusReport
from fleetcast.server.answers import (
    IDLE,
    Answer,
    ArtifactFile,
    Entry,
    encode_answer,
    etag_matches,
)
from fleetcast.server.api.deps import CurrentDevice, DeviceBearer, Session, State
from fleetcast.server.api.schemas import (
    AuthRequestIn,
    AuthResponseOut,
    ErrorResponse,
    InventoryIn,
    NextUpdateOut,
    StatusReportIn,
)
from fleetcast.server.blobs import BlobFileResponse, relative_path
from fleetcast.server.db.models import Device
from fleetcast.server.errors import NotFoundError, UnauthorizedError
from fleetcast.server.services import admission, artifacts, deltas, devices, updates

router = APIRouter(
    prefix="/api/device/v1",
    tags=["device"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)

SIGNATURE_HEADER: Final = "X-Fleetcast-Signature"


@router.post(
    "/auth",
    response_model=AuthResponseOut,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": AuthRequestIn.model_json_schema()}},
        },
        "parameters": [
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": True,
                "description": "hex ed25519 signature of the exact body bytes by public_key",
                "schema": {"type": "string"},
            }
        ],
    },
)
async def authenticate(request: Request, session: Session, state: State) -> AuthResponseOut:
    """Authenticate a device; accepted devices get a short-lived bearer token."""
    # The signature covers the exact bytes, so the body is read raw, not parsed by FastAPI.
    body = await request.body()
    try:
        AuthRequestIn.model_validate_json(body)
    except pydantic.ValidationError as e:
        errors = [{**err, "loc": ("body", *err.get("loc", ()))} for err in e.errors()]
        raise RequestValidationError(errors) from e
    response = await admission.authenticate(
        session,
        body,
        request.headers.get(SIGNATURE_HEADER),
        state.admission,
        client=request.client.host if request.client else None,
    )
    return AuthResponseOut(**response.to_dict())


@router.put("/inventory", status_code=204)
async def put_inventory(body: InventoryIn, device: CurrentDevice, session: Session) -> None:
    """Store the device's type, installed artifact and attributes."""
    await devices.update_inventory(session, device, Inventory.from_dict(body.model_dump()))


@router.get(
    "/next",
    response_model=NextUpdateOut,
    responses={304: {"description": "The answer still equals If-None-Match."}},
)
async def next_update(
    token: DeviceBearer,
    session: Session,
    state: State,
    wait: Annotated[int, Query(ge=0, le=3600, description="Long-poll up to N seconds.")] = 0,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """The update to install now, or ``{"update": null}``; long-polls with ``wait``.

    With ``If-None-Match`` the request is held until the answer differs from
    that ETag; without, until there is an update. Either way at most ``wait``
    seconds (capped by the server's ``max_long_poll``).

    A device this process knows to be accepted and idle
    (:mod:`fleetcast.server.answers`) is answered without the database: its
    token's HMAC is checked, and its first answer comes from memory.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, state.settings.max_long_poll)
    signer = state.admission.signer
    if not token:
        raise UnauthorizedError("this endpoint needs 'Authorization: Bearer <device token>'")
    device_id = signer.verify(token)
    device = None
    async with state.notifier.subscribe(device_id) as subscription:
        # Memory answers the first look and a wake-up; the periodic re-check (for a
        # notification another process may have lost) reads the database.
        entry = await _remembered(state, device_id)
        while True:
            if entry is not None and entry.answer is not None:
                answer = entry.answer
                # Batched in memory: a remembered poll writes nothing (fleetcast.server.lastseen).
                entry.last_seen = state.last_seen.seen(device_id, entry.last_seen, None) or (
                    entry.last_seen
                )
                entry = None
            else:
                read = await _answer_from_database(session, state, token, device)
                device, answer = read.device, read.answer
            unchanged = etag_matches(if_none_match, answer.etag)
            changed = not unchanged if if_none_match else answer.update
            remaining = deadline - loop.time()
            if changed or remaining <= 0:
                break
            if await subscription.wait(min(remaining, state.notifier.recheck)):
                entry = await _remembered(state, device_id)
    headers = {"ETag": answer.etag, "Cache-Control": "private, no-cache"}
    if unchanged:
        return Response(status_code=304, headers=headers)
    return Response(answer.body, media_type="application/json", headers=headers)


async def _remembered(state: State, device_id: str) -> Entry | None:
    entry = state.answers.get(device_id)
    if entry is None and state.primer.busy:
        # A phase's offers are being read in bulk: this device's is probably among them.
        await state.primer.settled()
        entry = state.answers.get(device_id)
    return entry


@dataclass(frozen=True)
class _Read:
    device: Device
    answer: Answer


async def _answer_from_database(
    session: Session, state: State, token: str, device: Device | None
) -> _Read:
    """The device's ``/next`` answer from the database, remembered when it is stable."""
    answers, settings = state.answers, state.settings
    generation = answers.generation
    if device is None:
        device = await admission.device_for_token(session, state.admission.signer, token)
        state.last_seen.seen(device.id, device.last_seen_at, None)
    found = await updates.next_deployment(session, device)
    if found is None:
        await session.commit()  # never hold a transaction while waiting
        answers.put(device.id, device.last_seen_at, generation, IDLE)
        return _Read(device, IDLE)
    offer = await updates.offer_for(
        session,
        device,
        found,
        public_url=settings.public_url,
        settings=settings,
        on_delta_queued=state.deltas.nudge,
    )
    await session.commit()
    if offer is None:  # withheld while its delta is generated: not remembered
        return _Read(device, IDLE)
    answer = encode_answer(offer)
    deployment, artifact = found
    installed = (device.artifact_name, device.artifact_version)
    if updates.offer_is_stable(installed, device.attributes, artifact, settings):
        answers.put(device.id, device.last_seen_at, generation, answer)
        state.primer.prime(deployment.id, deployment.current_phase)
    return _Read(device, answer)


@router.get(
    "/artifacts/{artifact_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)"},
        307: {"description": "S3 blob store: fetch the bytes from this presigned URL"},
        404: {"model": ErrorResponse},
    },
)
async def download(
    artifact_id: str, request: Request, token: DeviceBearer, state: State
) -> Response:
    """The artifact file; ``Range`` and ``If-Range`` resume an interrupted download.

    With an S3 blob store the answer is a 307 redirect to a short-lived
    presigned URL; behind nginx with ``accel_redirect_prefix`` set, nginx
    sends the file after this answer authorised the request.

    Authorised from memory when it can be (:mod:`fleetcast.server.answers`:
    a device last found accepted, an artifact's blob), and the bytes sent
    are booked in batches (:mod:`fleetcast.server.lastseen`): a download of
    a remembered device and artifact reads and writes no database.
    """
    answers, signer = state.answers, state.admission.signer
    device_id = answers.admitted(token, signer)
    if device_id is None:
        generation = answers.generation
        # A session only now: creating one per request was a tenth of the cost.
        async with state.db.sessions() as session:
            device = await admission.device_for_token(session, signer, token)
        device_id = device.id
        answers.admit(device_id, generation)
    file = await _artifact_file_of(None, state, artifact_id)
    served = deltas.served_length(request.headers.get("range"), file.size)
    state.last_seen.downloaded(device_id, artifact_id, served)
    return await _file_response(state, artifact_id, file)


@router.get(
    "/deltas/{delta_id}/download",
    response_class=FileResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)"},
        307: {"description": "S3 blob store: fetch the bytes from this presigned URL"},
        404: {"model": ErrorResponse},
    },
)
async def download_delta(
    delta_id: str, request: Request, device: CurrentDevice, session: Session, state: State
) -> Response:
    """A delta named by an update offer (unsigned: the device checks what it rebuilds)."""
    delta = await deltas.get_ready(session, delta_id)
    assert delta.blob_key is not None and delta.size is not None
    key, size, target_id = delta.blob_key, delta.size, delta.target_artifact_id
    await deltas.record_download(
        session, device, target_id, deltas.served_length(request.headers.get("range"), size)
    )
    filename = f"{delta_id}.delta"
    presigned = state.blobs.presigned_url(key, filename=filename)
    if presigned is not None:
        return RedirectResponse(presigned, status_code=307, headers={"Cache-Control": "no-store"})
    if not await state.blobs.exists(key):
        raise NotFoundError(f"the file of delta {delta_id} is missing from the blob store")
    return BlobFileResponse(
        state.blobs.path(key),
        media_type="application/octet-stream",
        filename=filename,
        headers={"ETag": f'"{key}"'},
    )


async def artifact_file(session: Session, state: State, artifact_id: str) -> Response:
    """A ranged file response for an artifact (shared with the management API).

    Three ways, by configuration: a redirect to a presigned object-store URL
    (S3), an empty answer whose ``X-Accel-Redirect`` header makes nginx send
    the local file, or the file itself from this process.

    Raises:
        NotFoundError: no such artifact, or its file is missing.
        StorageUnavailableError: the object store cannot be reached.
    """
    file = await _artifact_file_of(session, state, artifact_id)
    return await _file_response(state, artifact_id, file)


async def _artifact_file_of(
    session: Session | None, state: State, artifact_id: str
) -> ArtifactFile:
    """The artifact's blob, from memory or the database (then remembered).

    Raises:
        NotFoundError: no such artifact.
    """
    file = state.answers.artifact_file(artifact_id)
    if file is None:
        async with contextlib.AsyncExitStack() as stack:
            if session is None:
                session = await stack.enter_async_context(state.db.sessions())
            artifact = await artifacts.get_artifact(session, artifact_id)
            await session.commit()
        file = ArtifactFile(
            blob_key=artifact.blob_key,
            sha256=artifact.sha256,
            size=artifact.size,
            filename=f"{artifact.name}-{artifact.version}.fca",
        )
        state.answers.remember_artifact_file(artifact_id, file)
    return file


async def _file_response(state: State, artifact_id: str, file: ArtifactFile) -> Response:
    filename = file.filename
    presigned = state.blobs.presigned_url(file.blob_key, filename=filename)
    if presigned is not None:
        # Not cacheable: the URL expires, and the next request must be authorised again.
        return RedirectResponse(presigned, status_code=307, headers={"Cache-Control": "no-store"})
    # Content-addressed: the sha256 is a strong validator for If-Range.
    headers = {"ETag": f'"{file.sha256}"'}
    prefix = state.settings.accel_redirect_prefix
    if prefix is not None:
        headers["X-Accel-Redirect"] = f"{prefix}/{relative_path(file.blob_key)}"
        headers["Content-Disposition"] = f'attachment; filename="{filename}"'
        return Response(media_type="application/octet-stream", headers=headers)
    if not await state.blobs.exists(file.blob_key):
        raise NotFoundError(f"the file of artifact {artifact_id} is missing from the blob store")
    return BlobFileResponse(
        state.blobs.path(file.blob_key),
        media_type="application/octet-stream",
        filename=filename,
        headers=headers,
    )


@router.post(
    "/deployments/{deployment_id}/status",
    status_code=204,
    responses={404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}},
)
async def report_status(
    deployment_id: str,
    body: StatusReportIn,
    device: CurrentDevice,
    session: Session,
    state: State,
) -> None:
    """Record one step of the device's progress; repeats are idempotent, final states final."""
    report = StatusReport.from_dict(body.model_dump())
    if await updates.report_status(session, device, deployment_id, report):
        state.engine.nudge()
        # Its answer on /next may change (another deployment may become its
        # turn): every process forgets what it remembered of it.
        state.notifier.notify([device.id], push=False)
