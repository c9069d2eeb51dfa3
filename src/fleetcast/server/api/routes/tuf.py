"""TUF image repository and director (ADR 0008): management and device endpoints.

Management (``/api/v1/tuf``, admin tokens): the summary, the online keys and
their rotation, uploads of offline-signed roots, image targets and bins, and
reads of stored files for the offline tooling. Root uploads and key rotation
need the admin scope, targets and bins (releasing) the operator scope, reads
any scope; every change is audited.

Device (``/api/device/v1/tuf``, device token): both repositories' metadata
under consistent-snapshot names, nonces and signed version reports.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Depends, Request, Response

from fleetcast.core.canonical import parse_json_object
from fleetcast.exceptions import ValidationError
from fleetcast.server.api.audit import Audit, audit_trail
from fleetcast.server.api.deps import AdminScope, CurrentDevice, Session, State, current_admin
from fleetcast.server.api.schemas import ErrorResponse
from fleetcast.server.api.trust_schemas import (
    NonceOut,
    RotatedKeyOut,
    StoredMetadataOut,
    TufSummaryOut,
    VersionReportIn,
)
from fleetcast.server.db.models import utcnow
from fleetcast.server.db.trust_models import TufMetadata
from fleetcast.server.errors import NotFoundError, TooLargeError, VersionReportInvalidError
from fleetcast.server.trust import director, keys, reports, store, uploads
from fleetcast.trust import DIRECTOR_REPO, IMAGE_REPO

router = APIRouter(
    prefix="/api/v1/tuf",
    tags=["tuf"],
    dependencies=[
        Depends(current_admin, scope="function"),
        Depends(audit_trail, scope="function"),
    ],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
    },
)

device_router = APIRouter(
    prefix="/api/device/v1/tuf",
    tags=["device"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
    },
)

#: Largest version report accepted (a real one is a few hundred bytes).
MAX_REPORT_BYTES: Final = 64 * 1024

_METADATA_BODY: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "description": "A TUF metadata file, as signed (stored and served byte for byte).",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
_METADATA_RESPONSE: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}}
}
_UPLOAD_ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
}


def _metadata_response(data: bytes) -> Response:
    # Stored bytes as they are: hashes and lengths in snapshot/timestamp refer to them.
    return Response(data, media_type="application/json", headers={"Cache-Control": "no-cache"})


async def _body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > uploads.MAX_METADATA_BYTES:
        raise TooLargeError(
            f"metadata of {length} bytes is over the {uploads.MAX_METADATA_BYTES} byte limit",
            details={"limit": uploads.MAX_METADATA_BYTES},
        )
    return await request.body()


def _stored(row: TufMetadata) -> StoredMetadataOut:
    return StoredMetadataOut(
        repo=row.repo,
        role=row.role,
        version=row.version,
        expires=row.expires,
        length=row.length,
        sha256=row.sha256,
    )


# ----------------------------------------------------------------- management


@router.get("", response_model=TufSummaryOut)
async def summary(session: Session) -> TufSummaryOut:
    """Whether each repository is set up, its root, versions, target count, expiries, keys."""
    return TufSummaryOut.model_validate(await uploads.summary(session, utcnow()))


@router.get("/online-keys")
async def online_keys(session: Session) -> dict[str, dict[str, Any]]:
    """The TUF key object a root must list for each online role (``snapshot``,
    ``timestamp``, ``director``): the pending key while a rotation is under way,
    else the active one. Keys are created at first use.
    """
    found = await keys.online_keys(session, now=utcnow())
    await session.commit()
    return {role: keys.key_dict(rk.for_roots) for role, rk in found.items()}


@router.post(
    "/online-keys/{role}/rotate",
    response_model=RotatedKeyOut,
    status_code=201,
)
async def rotate_online_key(
    role: str, session: Session, _admin: AdminScope, audit: Audit
) -> RotatedKeyOut:
    """Create a pending key for ``role``; the server switches to it when a root lists it."""
    found, created = await keys.rotate(session, role, now=utcnow())
    assert found.pending is not None
    await session.commit()
    audit.details["keyid"] = found.pending.keyid
    return RotatedKeyOut(
        role=role,
        created=created,
        active=keys.key_dict(found.active),
        pending=keys.key_dict(found.pending),
    )


@router.put(
    "/{repo}/root",
    response_model=StoredMetadataOut,
    responses=_UPLOAD_ERRORS,
    openapi_extra=_METADATA_BODY,
)
async def upload_root(
    repo: str,
    request: Request,
    session: Session,
    state: State,
    _admin: AdminScope,
    audit: Audit,
) -> StoredMetadataOut:
    """Upload root version N+1 of ``image`` or ``director`` (the first: self-signed)."""
    row = await uploads.upload_root(session, repo, await _body(request), state.settings, utcnow())
    audit.target_id = f"{repo}/root"
    audit.details["version"] = row.version
    return _stored(row)


@router.put(
    "/image/{role}",
    response_model=StoredMetadataOut,
    responses=_UPLOAD_ERRORS,
    openapi_extra=_METADATA_BODY,
)
async def upload_image(
    role: str, request: Request, session: Session, state: State, audit: Audit
) -> StoredMetadataOut:
    """Upload image ``targets`` or a hash bin (``bins-XX``); snapshot and timestamp follow."""
    row = await uploads.upload_image(session, role, await _body(request), state.settings, utcnow())
    audit.target_id = f"image/{role}"
    audit.details["version"] = row.version
    return _stored(row)


@router.get("/{repo}/{file}", response_class=Response, responses=_METADATA_RESPONSE)
async def management_file(repo: str, file: str, session: Session) -> Response:
    """A stored file: ``root.json``/``targets.json``/``bins-XX.json`` (newest), ``N.<role>.json``,
    ``timestamp.json``. The director serves only its root chain here (the rest is per device).
    """
    uploads.check_repo(repo)
    name = store.FileName.parse(file)
    if repo == DIRECTOR_REPO and name.role != "root":
        raise NotFoundError(
            "director metadata other than root is per device (device API)",
            details={"repo": repo, "file": file},
        )
    return _metadata_response((await store.read(session, repo, name)).data)


# ----------------------------------------------------------------- device


@device_router.get("/image/{file}", response_class=Response, responses=_METADATA_RESPONSE)
async def image_file(file: str, device: CurrentDevice, session: Session) -> Response:
    """Image metadata: ``N.root.json``, ``timestamp.json``, ``N.snapshot.json``,
    ``N.targets.json``, ``N.bins-XX.json``.
    """
    name = store.FileName.parse(file)
    if not name.consistent:
        raise NotFoundError(
            f"{file} is not a consistent-snapshot name", details={"repo": IMAGE_REPO, "file": file}
        )
    row = await store.read(session, IMAGE_REPO, name)
    await session.commit()
    return _metadata_response(row.data)


@device_router.get("/director/{file}", response_class=Response, responses=_METADATA_RESPONSE)
async def director_file(file: str, device: CurrentDevice, session: Session) -> Response:
    """This device's director metadata: ``N.root.json`` (shared), ``timestamp.json``,
    ``N.snapshot.json``, ``N.targets.json``.
    """
    name = store.FileName.parse(file)
    data = await director.read(session, device, name, now=utcnow())
    await session.commit()
    return _metadata_response(data)


@device_router.post("/nonce", response_model=NonceOut)
async def nonce(device: CurrentDevice, session: Session) -> NonceOut:
    """A new single-use nonce for this device's next version report (replaces the previous)."""
    return NonceOut(nonce=await reports.issue_nonce(session, device, now=utcnow()))


@device_router.post(
    "/version-report",
    status_code=204,
    responses={
        409: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": VersionReportIn.model_json_schema()}},
        }
    },
)
async def version_report(request: Request, device: CurrentDevice, session: Session) -> None:
    """A signed version report with the device's current nonce (ADR 0008)."""
    # Read raw: ``signed`` is verified as sent, unknown fields included.
    data = await request.body()
    if len(data) > MAX_REPORT_BYTES:
        raise TooLargeError(
            f"a version report is at most {MAX_REPORT_BYTES} bytes",
            details={"limit": MAX_REPORT_BYTES},
        )
    try:
        body = parse_json_object(data, what="version report")
    except ValidationError as e:
        raise VersionReportInvalidError(str(e)) from e
    await reports.accept_report(session, device, body, now=utcnow())
