"""Mender device API routes (``/api/devices/v1/...`` and ``/api/devices/v2/...``).

Wire details the Mender client depends on: the auth token is the plain
response body; inventory answers 200, status and log 204; ``next`` answers
204 when there is nothing to do; download links carry their own
authorization (the client sends no token to them) and support ``Range``.
Bodies are read whole, so chunked requests without ``Content-Length`` work.
The logic is in :mod:`fleetcast.server.compat.mender_service`.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from fleetcast.server.api.deps import Session, State
from fleetcast.server.api.schemas import ErrorResponse
from fleetcast.server.compat import mender_service
from fleetcast.server.compat.files import blob_response
from fleetcast.server.compat.urls import external_base
from fleetcast.server.db.models import Artifact, Deployment, Device

router = APIRouter(
    prefix="/api/devices",
    tags=["Mender device API"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)

SIGNATURE_HEADER = "X-MEN-Signature"


async def mender_device(
    session: Session, state: State, authorization: Annotated[str | None, Header()] = None
) -> Device:
    """The accepted Mender device of the request (bearer token from ``auth_requests``)."""
    device = await mender_service.device_for_token(session, state.admission.signer, authorization)
    await session.commit()
    return device


MenderDevice = Annotated[Device, Depends(mender_device, scope="function")]


@router.post("/v1/authentication/auth_requests", response_class=PlainTextResponse)
async def auth_request(request: Request, session: Session, state: State) -> PlainTextResponse:
    """Authenticate; an accepted device gets its token as the response body."""
    token = await mender_service.authenticate(
        session,
        await request.body(),
        request.headers.get(SIGNATURE_HEADER),
        state.admission,
        client=request.client.host if request.client else None,
    )
    return PlainTextResponse(token, media_type="application/jwt")


@router.put("/v1/inventory/device/attributes")
async def put_inventory(request: Request, device: MenderDevice, session: Session) -> Response:
    """Replace the device's attributes; 200."""
    await mender_service.inventory(session, device, await request.body(), replace=True)
    return Response(status_code=200)


@router.patch("/v1/inventory/device/attributes")
async def patch_inventory(request: Request, device: MenderDevice, session: Session) -> Response:
    """Merge attributes into the device's; 200."""
    await mender_service.inventory(session, device, await request.body(), replace=False)
    return Response(status_code=200)


def _offer(
    request: Request,
    state: State,
    device: Device,
    found: tuple[Deployment, Artifact] | None,
) -> Response:
    if found is None:
        return Response(status_code=204)
    deployment, artifact = found
    expires = int(time.time()) + state.settings.mender_download_ttl
    signature = mender_service.download_token(
        state.admission.signer.key, artifact.id, device.id, expires
    )
    base = external_base(request, state.settings.public_url)
    uri = (
        f"{base}/api/devices/v1/fleetcast/artifacts/{artifact.id}/download"
        f"?device={device.id}&expires={expires}&signature={signature}"
    )
    meta = artifact.manifest
    return JSONResponse(
        {
            "id": deployment.id,
            "artifact": {
                "id": artifact.id,
                "artifact_name": meta.get("artifact_name", artifact.name),
                "device_types_compatible": list(artifact.compatible),
                "source": {
                    "uri": uri,
                    "expire": dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(),
                },
            },
        }
    )


@router.get("/v1/deployments/device/deployments/next")
async def next_v1_get(
    request: Request,
    device: MenderDevice,
    session: Session,
    state: State,
    artifact_name: Annotated[str | None, Query()] = None,
    device_type: Annotated[str | None, Query()] = None,
) -> Response:
    """The next deployment (200) or nothing to do (204)."""
    provides = {
        k: v for k, v in (("artifact_name", artifact_name), ("device_type", device_type)) if v
    }
    found = await mender_service.next_offer(session, device, provides)
    return _offer(request, state, device, found)


@router.post("/v1/deployments/device/deployments/next")
async def next_v1_post(
    request: Request, device: MenderDevice, session: Session, state: State
) -> Response:
    """The next deployment for the provides in the body (200), or 204."""
    provides = mender_service.provides_of(await request.body(), v2=False)
    found = await mender_service.next_offer(session, device, provides)
    return _offer(request, state, device, found)


@router.post("/v2/deployments/device/deployments/next")
async def next_v2_post(
    request: Request, device: MenderDevice, session: Session, state: State
) -> Response:
    """The next deployment for ``device_provides`` (200), or 204; no update control maps."""
    provides = mender_service.provides_of(await request.body(), v2=True)
    found = await mender_service.next_offer(session, device, provides)
    return _offer(request, state, device, found)


@router.put(
    "/v1/deployments/device/deployments/{deployment_id}/status",
    status_code=204,
    responses={409: {"model": ErrorResponse}},
)
async def status(
    deployment_id: str, request: Request, device: MenderDevice, session: Session, state: State
) -> None:
    """Record the device's progress; 409 once the deployment is aborted."""
    if await mender_service.report_status(session, device, deployment_id, await request.body()):
        state.engine.nudge()


@router.put(
    "/v1/deployments/device/deployments/{deployment_id}/log",
    status_code=204,
    responses={409: {"model": ErrorResponse}},
)
async def log(deployment_id: str, request: Request, device: MenderDevice, session: Session) -> None:
    """Keep the deployment log; 409 once the deployment is aborted."""
    await mender_service.upload_log(session, device, deployment_id, await request.body())


@router.get(
    "/v1/fleetcast/artifacts/{artifact_id}/download",
    response_model=None,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}},
)
async def download(
    artifact_id: str,
    session: Session,
    state: State,
    device: Annotated[str, Query()],
    expires: Annotated[int, Query()],
    signature: Annotated[str, Query()],
) -> Response:
    """The artifact behind a link from ``next``; ``Range`` resumes it."""
    artifact = await mender_service.check_download(
        session, state.admission.signer.key, artifact_id, device, expires, signature
    )
    await session.commit()
    return await blob_response(state, artifact, f"{artifact.name}.mender")
