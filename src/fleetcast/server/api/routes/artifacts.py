"""Management API: artifacts (``/api/v1/artifacts``)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from fleetcast.server.api.deps import Session, State, current_admin
from fleetcast.server.api.routes.device import artifact_file
from fleetcast.server.api.schemas import ArtifactList, ArtifactOut, ErrorResponse
from fleetcast.server.api.views import artifact_out
from fleetcast.server.services import artifacts

router = APIRouter(
    prefix="/api/v1/artifacts",
    tags=["artifacts"],
    dependencies=[Depends(current_admin, scope="function")],
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
    },
)
async def upload(request: Request, session: Session, state: State) -> ArtifactOut:
    """Upload an artifact file (streamed); it is verified completely before it is stored."""
    row = await artifacts.upload(
        session,
        state.blobs,
        request.stream(),
        trusted_keys=state.trusted_keys,
        max_size=state.settings.max_artifact_size,
    )
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
async def download(artifact_id: str, session: Session, state: State) -> FileResponse:
    """The artifact file (supports ``Range``)."""
    return await artifact_file(session, state, artifact_id)


@router.delete("/{artifact_id}", status_code=204, responses={409: {"model": ErrorResponse}})
async def delete(artifact_id: str, session: Session, state: State) -> None:
    """Delete an artifact no deployment uses."""
    await artifacts.delete_artifact(session, state.blobs, artifact_id)
