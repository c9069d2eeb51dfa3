"""hawkBit DDI API v1 routes: ``/{tenant}/controller/v1/{controllerId}/...``.

Wire details real clients depend on: action ids are integers in paths and
strings in JSON; links are absolute; feedback and configData answer 200
(SWUpdate treats 204 as an error); feedback on a closed action is 410.
The logic is in :mod:`fleetcast.server.compat.ddi_service`.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from fleetcast.server.api.deps import Session, State
from fleetcast.server.api.schemas import ErrorResponse
from fleetcast.server.compat import ddi_service
from fleetcast.server.compat.files import blob_response
from fleetcast.server.compat.urls import external_base
from fleetcast.server.db.models import Artifact, Device
from fleetcast.server.errors import NotFoundError, UnauthorizedError

router = APIRouter(
    prefix="/{tenant}/controller/v1/{controller_id}",
    tags=["hawkBit DDI"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        429: {"model": ErrorResponse},
    },
)

Tenant = Annotated[str, Path(description="hawkBit tenant (the server's `ddi_tenant`).")]
ControllerId = Annotated[str, Path(description="The device's controller id.")]
ActionId = Annotated[int, Path(ge=1, le=2**62, description="A DDI action id.")]


async def ddi_device(
    tenant: Tenant,
    controller_id: ControllerId,
    request: Request,
    session: Session,
    state: State,
    authorization: Annotated[str | None, Header()] = None,
) -> Device:
    """The accepted DDI device of the request (TargetToken or GatewayToken).

    Wrong tokens are charged to the client's address (429 once its budget is gone).
    """
    limits = state.admission.rate_limits
    client = request.client.host if request.client else None
    limits.check_failed_tokens(client)
    try:
        return await ddi_service.authenticate(
            session, state.settings, tenant, controller_id, authorization
        )
    except UnauthorizedError:
        limits.count_failed_token(client)
        raise


DdiDevice = Annotated[Device, Depends(ddi_device, scope="function")]


def _hhmmss(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _root(request: Request, state: State, tenant: str, controller_id: str) -> str:
    base = external_base(request, state.settings.public_url)
    return f"{base}/{quote(tenant)}/controller/v1/{quote(controller_id, safe='')}"


def _link(href: str) -> dict[str, str]:
    return {"href": href}


@router.get("", summary="Base poll resource")
async def base(
    tenant: Tenant,
    controller_id: ControllerId,
    request: Request,
    device: DdiDevice,
    session: Session,
    state: State,
) -> JSONResponse:
    """Polling interval and links to what the device should do next."""
    answer = await ddi_service.poll(session, device, state.settings)
    await session.commit()
    root = _root(request, state, tenant, controller_id)
    links: dict[str, Any] = {}
    if answer.cancel_action is not None:
        links["cancelAction"] = _link(f"{root}/cancelAction/{answer.cancel_action}")
    elif answer.deployment_action is not None:
        links["deploymentBase"] = _link(
            f"{root}/deploymentBase/{answer.deployment_action}?c={answer.tag}"
        )
    if answer.installed_action is not None:
        links["installedBase"] = _link(f"{root}/installedBase/{answer.installed_action}")
    if answer.wants_config_data:
        links["configData"] = _link(f"{root}/configData")
    body: dict[str, Any] = {"config": {"polling": {"sleep": _hhmmss(answer.sleep_seconds)}}}
    if links:
        body["_links"] = links
    return JSONResponse(body, headers={"Cache-Control": "no-cache"})


def _artifact_json(root: str, artifact: Artifact) -> dict[str, Any]:
    meta = artifact.manifest
    filename = str(meta.get("filename") or f"{artifact.name}-{artifact.version}")
    href = f"{root}/softwaremodules/{artifact.id}/artifacts/{quote(filename)}"
    return {
        "filename": filename,
        "hashes": {"sha1": meta.get("sha1"), "md5": meta.get("md5"), "sha256": artifact.sha256},
        "size": artifact.size,
        "_links": {
            "download": _link(href),
            "download-http": _link(href),
            "md5sum": _link(href + ".MD5SUM"),
            "md5sum-http": _link(href + ".MD5SUM"),
        },
    }


def _action_json(
    root: str, view: ddi_service.ActionView, history: int | None, key: str
) -> dict[str, Any]:
    artifact = view.artifact
    deployment: dict[str, Any] = {
        "download": view.download,
        "update": view.update,
        "chunks": [
            {
                "part": "os",
                "version": artifact.version,
                "name": artifact.name,
                "artifacts": [_artifact_json(root, artifact)],
            }
        ],
    }
    if view.maintenance_window is not None:
        deployment["maintenanceWindow"] = view.maintenance_window
    body: dict[str, Any] = {"id": str(view.action.id), key: deployment}
    if history is not None:
        messages = view.history[-history:] if history > 0 else view.history
        body["actionHistory"] = {"status": view.state.value, "messages": messages}
    return body


@router.get("/deploymentBase/{action_id}", summary="An update action")
async def deployment_base(
    tenant: Tenant,
    controller_id: ControllerId,
    action_id: ActionId,
    request: Request,
    device: DdiDevice,
    session: Session,
    state: State,
    c: Annotated[str | None, Query(description="Cache buster from the poll link.")] = None,
    action_history: Annotated[int | None, Query(alias="actionHistory")] = None,
) -> JSONResponse:
    """Chunks, artifacts with hashes and download links, and the action type."""
    view = await ddi_service.action_view(session, device, action_id)
    await session.commit()
    root = _root(request, state, tenant, controller_id)
    return JSONResponse(_action_json(root, view, action_history, "deployment"))


@router.post("/deploymentBase/{action_id}/feedback", summary="Feedback on an update action")
async def deployment_feedback(
    action_id: ActionId, request: Request, device: DdiDevice, session: Session, state: State
) -> Response:
    """Progress and result of an action; 200, or 410 once the action is closed."""
    feedback = ddi_service.Feedback.parse(await request.body())
    if await ddi_service.deployment_feedback(session, device, action_id, feedback):
        state.engine.nudge()
    return Response(status_code=200)


@router.get("/cancelAction/{action_id}", summary="A cancel request")
async def cancel_action(action_id: ActionId, device: DdiDevice, session: Session) -> JSONResponse:
    """The action to stop (its deployment was aborted)."""
    action = await ddi_service.cancel_view(session, device, action_id)
    await session.commit()
    return JSONResponse({"id": str(action.id), "cancelAction": {"stopId": str(action.id)}})


@router.post("/cancelAction/{action_id}/feedback", summary="Feedback on a cancel request")
async def cancel_feedback(
    action_id: ActionId, request: Request, device: DdiDevice, session: Session, state: State
) -> Response:
    """Acknowledge (``closed``/``canceled``) or refuse (``rejected``) a cancel; 200."""
    feedback = ddi_service.Feedback.parse(await request.body())
    await ddi_service.cancel_feedback(session, device, action_id, feedback)
    state.engine.nudge()
    return Response(status_code=200)


@router.put("/configData", summary="Device attributes")
async def config_data(request: Request, device: DdiDevice, session: Session) -> Response:
    """Merge (default), replace or remove attributes; ``device_type`` sets the type. 200."""
    await ddi_service.config_data(session, device, await request.body())
    return Response(status_code=200)


@router.get("/installedBase/{action_id}", summary="The installed update")
async def installed_base(
    tenant: Tenant,
    controller_id: ControllerId,
    action_id: ActionId,
    request: Request,
    device: DdiDevice,
    session: Session,
    state: State,
    action_history: Annotated[int | None, Query(alias="actionHistory")] = None,
) -> JSONResponse:
    """The last action that installed successfully."""
    view = await ddi_service.installed_view(session, device, action_id)
    await session.commit()
    root = _root(request, state, tenant, controller_id)
    return JSONResponse(_action_json(root, view, action_history, "deployment"))


@router.get("/softwaremodules/{module_id}/artifacts", summary="Artifacts of a software module")
async def module_artifacts(
    tenant: Tenant,
    controller_id: ControllerId,
    module_id: str,
    request: Request,
    device: DdiDevice,
    session: Session,
    state: State,
) -> JSONResponse:
    artifact = await ddi_service.downloadable(session, device, module_id)
    await session.commit()
    return JSONResponse([_artifact_json(_root(request, state, tenant, controller_id), artifact)])


@router.get(
    "/softwaremodules/{module_id}/artifacts/{filename}",
    summary="Download an artifact (or its .MD5SUM)",
    response_model=None,
    responses={
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "Partial content (Range)"},
    },
)
async def download(
    module_id: str, filename: str, device: DdiDevice, session: Session, state: State
) -> Response:
    """The file; ``Range`` and ``If-Range`` resume a download. ``<file>.MD5SUM``: its md5."""
    artifact = await ddi_service.downloadable(session, device, module_id)
    await session.commit()
    name = str(artifact.manifest.get("filename") or "")
    if filename == f"{name}.MD5SUM":
        return PlainTextResponse(f"{artifact.manifest.get('md5')}  {name}\n")
    if filename != name:
        raise NotFoundError(f"software module {module_id} has no artifact {filename!r}")
    return await blob_response(state, artifact, name)
