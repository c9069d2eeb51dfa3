"""Management API: artifacts (``/api/v1/artifacts``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response

from fleetcast.server.api.audit import Audit, audit_trail
from fleetcast.server.api.deps import Session, State, current_admin
from fleetcast.server.api.routes.device import artifact_file
from fleetcast.server.api.schemas import ArtifactList, ArtifactOut, ErrorResponse
from fleetcast.server.api.views import artifact_out
from fleetcast.server.compat import uploads
from fleetcast.server.services import artifacts, content_keys
from fleetcast.server.services.formats import ArtifactFormat

router = APIRouter(
    prefix="/api/v1/artifacts",
    tags=["artifacts"],
    dependencies=[
        Depends(audit_trail, scope="function"),
        Depends(current_admin, scope="function"),
    ],
    responses={401: {"model": ErrorResponse}, 404: {"model": ErrorResponse}},
)


@router.post(
    "",
    response_model=ArtifactOut,
    status_code=201,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={
        409: {"model": ErrorResponse},
        413: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        507: {"model": ErrorResponse},
    },
)
async def upload(
    request: Request,
    session: Session,
    state: State,
    audit: Audit,
    format: Annotated[
        Literal["auto", "fleetcast", "file", "mender"],
        Query(description="auto: a Fleetcast or a Mender artifact, told by its content."),
    ] = "auto",
    name: Annotated[str | None, Query(description="file: the artifact name.")] = None,
    version: Annotated[
        str | None, Query(description="file: the version; mender: default the artifact name.")
    ] = None,
    compatible: Annotated[
        list[str], Query(description="file: a compatible device type (repeat).")
    ] = [],  # noqa: B006  # FastAPI copies query defaults
    filename: Annotated[
        str | None, Query(description="file: the name DDI clients see, e.g. fw-1.1.swu.")
    ] = None,
) -> ArtifactOut:
    """Upload an artifact file (streamed); it is verified completely before it is stored.

    A Fleetcast (``.fca``) or Mender artifact is recognised by its content; an
    opaque file for hawkBit-DDI clients (``.swu``, ``.raucb``) needs
    ``format=file`` with ``name``, ``version``, ``compatible`` and ``filename``.
    """
    chunks: AsyncIterator[bytes] = request.stream()
    kind = ArtifactFormat.FLEETCAST if format == "auto" else ArtifactFormat(format)
    if format == "auto":
        kind, chunks = await uploads.sniff(chunks)
    if kind == ArtifactFormat.FLEETCAST:
        row = await artifacts.upload(
            session,
            state.blobs,
            chunks,
            trusted_keys=state.trusted_keys,
            max_size=state.settings.max_artifact_size,
        )
    else:
        row = await uploads.upload_foreign(
            session,
            state.blobs,
            chunks,
            format=kind,
            max_size=state.settings.max_artifact_size,
            name=name,
            version=version,
            compatible=compatible,
            filename=filename,
        )
    audit.target_id = row.id
    audit.details = {"name": row.name, "version": row.version, "sha256": row.sha256}
    return artifact_out(row)


@router.get("", response_model=ArtifactList)
async def list_artifacts(session: Session) -> ArtifactList:
    return ArtifactList(items=[artifact_out(a) for a in await artifacts.list_artifacts(session)])


@router.get("/{artifact_id}", response_model=ArtifactOut)
async def get_artifact(artifact_id: str, session: Session) -> ArtifactOut:
    return artifact_out(await artifacts.get_artifact(session, artifact_id))


@router.get(
    "/{artifact_id}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def download(artifact_id: str, session: Session, state: State) -> Response:
    """The artifact file (supports ``Range``; a redirect to S3 with an S3 blob store)."""
    return await artifact_file(session, state, artifact_id)


@router.delete("/{artifact_id}", status_code=204, responses={409: {"model": ErrorResponse}})
async def delete(artifact_id: str, session: Session, state: State) -> None:
    """Delete an artifact no deployment uses."""
    await artifacts.delete_artifact(session, state.blobs, artifact_id)


@router.put(
    "/{artifact_id}/content-key",
    status_code=204,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    },
    responses={422: {"model": ErrorResponse}},
)
async def put_content_key(
    artifact_id: str, request: Request, session: Session, state: State
) -> None:
    """Store the content key of an artifact encrypted per device (ADR 0008).

    The body is the raw 32-byte key (``application/octet-stream``, never JSON,
    so the audit log does not record it). It must be the key the manifest
    names, and every payload must decrypt to its signed hashes; the server
    keeps it only sealed with its key-encryption key, and wraps it for each
    device's offer.
    """
    row = await artifacts.get_artifact(session, artifact_id)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > 64:  # a key is 32 bytes: never buffer an arbitrary body
            break
    await content_keys.store(
        session,
        state.blobs,
        state.settings.data_dir,
        row,
        body,
        trusted_keys=state.trusted_keys,
    )
