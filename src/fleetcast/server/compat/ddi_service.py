"""hawkBit DDI API v1 on Fleetcast's services: authentication, actions, feedback, configData.

A DDI client (SWUpdate's suricatta, rauc-hawkbit-updater) polls its base
resource, follows the links it finds there and posts feedback:

1. **Authentication** (:func:`authenticate`): ``Authorization: TargetToken
   <token>`` (a per-device secret the operator set, hashed in the device
   row) or ``GatewayToken <token>`` (the server-wide secret from the
   settings, which may act for any controller id and registers unknown ones,
   pending unless ``ddi_gateway_accept``). Both go through the usual
   admission states: preauthorized devices are accepted on first contact,
   pending ones get 401 ``device_pending``, rejected ones 403.
2. **Poll** (:func:`poll`): the device's next deployment
   (``updates.next_deployment``) becomes an *action* with an integer id
   (``ddi_actions``); an open action of an aborted deployment is offered as
   ``cancelAction`` instead.
3. **Feedback** (:func:`deployment_feedback`): each DDI ``execution`` /
   ``result`` is mapped to a Fleetcast report state and recorded by
   ``updates.report_status``; a final one closes the action, and feedback on
   a closed action is refused with 410, as hawkBit does.

Action types and maintenance windows are deployment options
(``deployments.options["ddi"]``): ``forced`` (default), ``soft`` and
``downloadonly``; outside a maintenance window a not yet started action is
not offered at all, so no client can install early (ADR 0006).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcast.core.wire import DeviceUpdateStatus, StatusReport
from fleetcast.exceptions import ValidationError
from fleetcast.server.compat.identity import identity_hash, new_compat_device
from fleetcast.server.compat.members import stop_member
from fleetcast.server.db.models import (
    Artifact,
    DdiAction,
    Deployment,
    DeploymentDevice,
    Device,
    utcnow,
)
from fleetcast.server.errors import (
    DeploymentAbortedError,
    DevicePendingError,
    DeviceRejectedError,
    GoneError,
    NotFoundError,
    UnauthorizedError,
)
from fleetcast.server.services import updates
from fleetcast.server.services.credentials import hash_token
from fleetcast.server.services.devices import add_event
from fleetcast.server.services.formats import ArtifactFormat, DeviceKind
from fleetcast.server.settings import Settings
from fleetcast.server.states import (
    IN_PROGRESS,
    INSTALLED,
    TERMINAL,
    DeploymentStatus,
    DeviceStatus,
    RolloutState,
)

ACTION_TYPES: Final = ("forced", "soft", "downloadonly")
MAX_CONFIG_KEYS: Final = 512
MAX_CONFIG_VALUE: Final = 4096
MAX_DETAILS: Final = 100
MAX_LOG_LINES: Final = 100


# ----------------------------------------------------------------- options


@dataclass(frozen=True)
class MaintenanceWindow:
    """A daily window, optionally on some weekdays only, in a fixed UTC offset.

    ``start`` is ``HH:MM`` local time, ``duration_minutes`` may cross
    midnight, ``weekdays`` are 0 (Monday) .. 6 (Sunday) of the day the window
    starts; empty means every day.
    """

    start: str
    duration_minutes: int
    utc_offset_minutes: int = 0
    weekdays: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        try:
            hours, minutes = (int(p) for p in self.start.split(":"))
        except ValueError as e:
            raise ValidationError(f"maintenance window start {self.start!r} is not HH:MM") from e
        if not (0 <= hours < 24 and 0 <= minutes < 60):
            raise ValidationError(f"maintenance window start {self.start!r} is not HH:MM")
        if not 1 <= self.duration_minutes <= 7 * 24 * 60:
            raise ValidationError("maintenance window duration must be 1 minute .. 7 days")
        if not -14 * 60 <= self.utc_offset_minutes <= 14 * 60:
            raise ValidationError("maintenance window UTC offset must be within ±14 hours")
        if any(not 0 <= d <= 6 for d in self.weekdays):
            raise ValidationError("maintenance window weekdays are 0 (Monday) .. 6 (Sunday)")

    def is_open(self, now: dt.datetime) -> bool:
        """Whether ``now`` (aware) lies in a window."""
        local = now.astimezone(dt.timezone(dt.timedelta(minutes=self.utc_offset_minutes)))
        hours, minutes = (int(p) for p in self.start.split(":"))
        length = dt.timedelta(minutes=self.duration_minutes)
        for days_back in range(8):
            day = local.date() - dt.timedelta(days=days_back)
            start = dt.datetime.combine(day, dt.time(hours, minutes), tzinfo=local.tzinfo)
            if self.weekdays and day.weekday() not in self.weekdays:
                continue
            if start <= local < start + length:
                return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "duration_minutes": self.duration_minutes,
            "utc_offset_minutes": self.utc_offset_minutes,
            "weekdays": list(self.weekdays),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MaintenanceWindow:
        """Raises: ValidationError: a field is missing or out of range."""
        try:
            return cls(
                start=str(data["start"]),
                duration_minutes=int(data["duration_minutes"]),
                utc_offset_minutes=int(data.get("utc_offset_minutes", 0)),
                weekdays=tuple(int(d) for d in data.get("weekdays", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValidationError(f"invalid maintenance window: {e}") from e


@dataclass(frozen=True)
class DdiOptions:
    """How a deployment is offered to DDI devices."""

    action_type: str = "forced"
    maintenance_window: MaintenanceWindow | None = None

    def __post_init__(self) -> None:
        if self.action_type not in ACTION_TYPES:
            raise ValidationError(f"DDI action type must be one of {', '.join(ACTION_TYPES)}")

    def to_dict(self) -> dict[str, Any]:
        window = self.maintenance_window
        return {
            "action_type": self.action_type,
            "maintenance_window": window.to_dict() if window else None,
        }

    @classmethod
    def of(cls, deployment: Deployment) -> DdiOptions:
        raw = (deployment.options or {}).get("ddi") or {}
        window = raw.get("maintenance_window")
        return cls(
            action_type=raw.get("action_type", "forced"),
            maintenance_window=MaintenanceWindow.from_dict(window) if window else None,
        )


# ----------------------------------------------------------------- authentication


def _identity(controller_id: str) -> dict[str, str]:
    return {"controller_id": controller_id}


async def find_device(session: AsyncSession, controller_id: str) -> Device | None:
    """The DDI device with this controller id, if known."""
    _, lookup = identity_hash(DeviceKind.DDI, _identity(controller_id))
    return await session.scalar(select(Device).where(Device.identity_hash == lookup))


def _accept(session: AsyncSession, device: Device, reason: str) -> None:
    device.status = DeviceStatus.ACCEPTED.value
    add_event(session, device.id, kind="admission", state=device.status, message=reason)


async def authenticate(
    session: AsyncSession,
    settings: Settings,
    tenant: str,
    controller_id: str,
    authorization: str | None,
) -> Device:
    """The accepted DDI device a request is for.

    Raises:
        NotFoundError: the tenant is not this server's.
        UnauthorizedError: no, an unknown or a wrong token.
        DevicePendingError: the device waits for an operator.
        DeviceRejectedError: the device was rejected or decommissioned.
    """
    if tenant.lower() != settings.ddi_tenant.lower():
        raise NotFoundError(f"unknown tenant {tenant!r}", details={"tenant": tenant})
    if not controller_id or len(controller_id) > 256:
        raise NotFoundError("a controller id has 1 to 256 characters")
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    device = await find_device(session, controller_id)
    if scheme.lower() == "targettoken" and token:
        expected = device.target_token_hash if device is not None else None
        if device is None or not expected or not hmac.compare_digest(expected, hash_token(token)):
            raise UnauthorizedError(f"TargetToken does not match controller {controller_id!r}")
        reason = "preauthorized target token presented"
    elif scheme.lower() == "gatewaytoken" and token:
        secret = settings.ddi_gateway_token
        if secret is None or not hmac.compare_digest(secret.encode(), token.encode()):
            raise UnauthorizedError("unknown GatewayToken")
        reason = "preauthorized, gateway token presented"
        if device is None:
            device = await _register(session, settings, controller_id)
    else:
        raise UnauthorizedError(
            "DDI requests need 'Authorization: TargetToken <token>' or 'GatewayToken <token>'"
        )
    if device.kind != DeviceKind.DDI:  # pragma: no cover - the lookup hash includes the kind
        raise UnauthorizedError(f"device {device.id} is not a DDI device")
    if device.status in (DeviceStatus.REJECTED, DeviceStatus.DECOMMISSIONED):
        raise DeviceRejectedError(
            f"device {device.id} is {device.status}", details={"device_id": device.id}
        )
    if device.status == DeviceStatus.PREAUTHORIZED:
        _accept(session, device, reason)
    if device.last_seen_at is None or utcnow() - device.last_seen_at > dt.timedelta(seconds=30):
        device.last_seen_at = utcnow()
    await session.commit()
    if device.status != DeviceStatus.ACCEPTED:
        raise DevicePendingError(
            "device is waiting for an operator to accept it", details={"device_id": device.id}
        )
    return device


async def _register(session: AsyncSession, settings: Settings, controller_id: str) -> Device:
    status = DeviceStatus.ACCEPTED if settings.ddi_gateway_accept else DeviceStatus.PENDING
    device = new_compat_device(
        DeviceKind.DDI,
        _identity(controller_id),
        device_type=settings.ddi_default_device_type,
        status=status,
    )
    session.add(device)
    add_event(
        session, device.id, kind="admission", state=status.value, message="first contact (gateway)"
    )
    try:
        await session.flush()
    except DBIntegrityError:
        await session.rollback()
        raise DevicePendingError("device is waiting for an operator to accept it") from None
    return device


# ----------------------------------------------------------------- poll


@dataclass(frozen=True)
class PollAnswer:
    """What the base resource tells a DDI device."""

    sleep_seconds: int
    deployment_action: int | None = None
    cancel_action: int | None = None
    installed_action: int | None = None
    wants_config_data: bool = False
    #: Changes whenever the offered action's content changes (hawkBit's ``?c=``).
    tag: str = ""


async def _action_for(session: AsyncSession, deployment_id: str, device_id: str) -> DdiAction:
    query = select(DdiAction).where(
        DdiAction.deployment_id == deployment_id, DdiAction.device_id == device_id
    )
    action = await session.scalar(query)
    if action is not None:
        return action
    action = DdiAction(deployment_id=deployment_id, device_id=device_id, closed=False)
    session.add(action)
    try:
        await session.commit()
    except DBIntegrityError:  # a parallel poll of the same device created it
        await session.rollback()
        found = await session.scalar(query)
        assert found is not None
        return found
    return action


async def _cancelable(session: AsyncSession, device: Device) -> DdiAction | None:
    """An open action of this device whose deployment was aborted (or it was cut off)."""
    row = await session.scalar(
        select(DdiAction)
        .join(Deployment, Deployment.id == DdiAction.deployment_id)
        .join(
            DeploymentDevice,
            (DeploymentDevice.deployment_id == DdiAction.deployment_id)
            & (DeploymentDevice.device_id == DdiAction.device_id),
        )
        .where(
            DdiAction.device_id == device.id,
            DdiAction.closed.is_(False),
            (Deployment.status == DeploymentStatus.ABORTED.value)
            | (DeploymentDevice.state == RolloutState.ABORTED.value),
        )
        .order_by(DdiAction.id)
        .limit(1)
    )
    return row


async def _working_while_paused(session: AsyncSession, device: Device) -> DdiAction | None:
    return await session.scalar(
        select(DdiAction)
        .join(Deployment, Deployment.id == DdiAction.deployment_id)
        .join(
            DeploymentDevice,
            (DeploymentDevice.deployment_id == DdiAction.deployment_id)
            & (DeploymentDevice.device_id == DdiAction.device_id),
        )
        .where(
            DdiAction.device_id == device.id,
            DdiAction.closed.is_(False),
            Deployment.status == DeploymentStatus.PAUSED.value,
            DeploymentDevice.state.in_([s.value for s in IN_PROGRESS]),
        )
        .order_by(DdiAction.id)
        .limit(1)
    )


async def _installed(session: AsyncSession, device: Device) -> DdiAction | None:
    return await session.scalar(
        select(DdiAction)
        .join(
            DeploymentDevice,
            (DeploymentDevice.deployment_id == DdiAction.deployment_id)
            & (DeploymentDevice.device_id == DdiAction.device_id),
        )
        .where(
            DdiAction.device_id == device.id,
            DeploymentDevice.state.in_([s.value for s in INSTALLED]),
        )
        .order_by(DdiAction.id.desc())
        .limit(1)
    )


async def poll(
    session: AsyncSession, device: Device, settings: Settings, *, now: dt.datetime | None = None
) -> PollAnswer:
    """The device's base resource: its open action (or a cancel), installed base, config wish."""
    moment = now or utcnow()
    installed = await _installed(session, device)
    common: dict[str, Any] = {
        "sleep_seconds": settings.ddi_polling_interval,
        "installed_action": installed.id if installed else None,
        "wants_config_data": not device.attributes,
    }
    cancel = await _cancelable(session, device)
    if cancel is not None:
        return PollAnswer(cancel_action=cancel.id, tag=f"cancel-{cancel.id}", **common)
    found = await updates.next_deployment(session, device)
    if found is None:
        # A paused deployment offers nothing new, but a device already working
        # on it must still find its action to report the end (ADR 0002).
        working = await _working_while_paused(session, device)
        if working is not None:
            return PollAnswer(deployment_action=working.id, tag=f"paused-{working.id}", **common)
        return PollAnswer(**common)
    deployment, artifact = found
    options = DdiOptions.of(deployment)
    window = options.maintenance_window
    member_state = await session.scalar(
        select(DeploymentDevice.state).where(
            DeploymentDevice.deployment_id == deployment.id,
            DeploymentDevice.device_id == device.id,
        )
    )
    if window and member_state == RolloutState.SCHEDULED and not window.is_open(moment):
        # Not started and outside its window: not offered (ADR 0006).
        return PollAnswer(**common)
    action = await _action_for(session, deployment.id, device.id)
    tag = hashlib.sha256(
        f"{action.id}:{artifact.id}:{options.action_type}:{deployment.status}".encode()
    ).hexdigest()[:12]
    return PollAnswer(deployment_action=action.id, tag=tag, **common)


# ----------------------------------------------------------------- deploymentBase


@dataclass(frozen=True)
class ActionView:
    """What ``deploymentBase/{id}`` (and ``installedBase/{id}``) shows."""

    action: DdiAction
    deployment: Deployment
    artifact: Artifact
    state: RolloutState
    download: str
    update: str
    maintenance_window: str | None
    history: list[str] = field(default_factory=list)


async def _own_action(session: AsyncSession, device: Device, action_id: int) -> DdiAction:
    action = await session.get(DdiAction, action_id)
    if action is None or action.device_id != device.id:
        raise NotFoundError(
            f"action {action_id} not found for this controller", details={"action_id": action_id}
        )
    return action


async def action_view(
    session: AsyncSession, device: Device, action_id: int, *, now: dt.datetime | None = None
) -> ActionView:
    """The deployment behind an action, the artifact of the device's format, and how to run it.

    Raises:
        NotFoundError: no such action for this device.
    """
    action = await _own_action(session, device, action_id)
    deployment = await session.get(Deployment, action.deployment_id)
    member = await session.scalar(
        select(DeploymentDevice).where(
            DeploymentDevice.deployment_id == action.deployment_id,
            DeploymentDevice.device_id == device.id,
        )
    )
    if deployment is None or member is None:
        raise NotFoundError(f"action {action_id} has no deployment any more")
    artifact = await updates.member_artifact(session, deployment, member.artifact_id)
    if artifact.format != ArtifactFormat.FILE:
        raise NotFoundError(
            f"deployment {deployment.id} has no file artifact for DDI devices",
            details={"deployment_id": deployment.id},
        )
    options = DdiOptions.of(deployment)
    download = update = "forced" if options.action_type == "forced" else "attempt"
    if options.action_type == "downloadonly":
        download, update = "forced", "skip"
    window = None
    if options.maintenance_window is not None:
        window = (
            "available" if options.maintenance_window.is_open(now or utcnow()) else "unavailable"
        )
    return ActionView(
        action=action,
        deployment=deployment,
        artifact=artifact,
        state=RolloutState(member.state),
        download=download,
        update=update,
        maintenance_window=window,
        history=[member.last_message] if member.last_message else [],
    )


async def installed_view(session: AsyncSession, device: Device, action_id: int) -> ActionView:
    """``installedBase/{id}``: an action that installed successfully.

    Raises:
        NotFoundError: no such action, or it did not install.
    """
    view = await action_view(session, device, action_id)
    if view.state not in INSTALLED:
        raise NotFoundError(f"action {action_id} did not install", details={"action_id": action_id})
    return view


# ----------------------------------------------------------------- feedback


@dataclass(frozen=True)
class Feedback:
    """A DDI feedback body, parsed leniently (legacy ``id``/``time`` fields are ignored)."""

    execution: str
    finished: str = "none"
    progress: int | None = None
    details: tuple[str, ...] = ()

    EXECUTIONS: ClassVar[frozenset[str]] = frozenset(
        {"closed", "proceeding", "canceled", "scheduled", "rejected", "resumed", "download",
         "downloaded"}
    )  # fmt: skip

    @classmethod
    def parse(cls, body: bytes) -> Feedback:
        """Raises: ValidationError: not JSON, or no known ``status.execution``."""
        try:
            data = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValidationError(f"feedback is not JSON: {e}") from e
        status = data.get("status") if isinstance(data, dict) else None
        if not isinstance(status, dict):
            raise ValidationError("feedback needs a 'status' object")
        execution = str(status.get("execution", "")).strip().lower()
        if execution not in cls.EXECUTIONS:
            raise ValidationError(
                f"status.execution must be one of {', '.join(sorted(cls.EXECUTIONS))}"
            )
        result = status.get("result")
        if not isinstance(result, dict):
            result = {}
        finished = str(result.get("finished", "none") or "none").strip().lower()
        if finished not in ("success", "failure", "none"):
            raise ValidationError("status.result.finished must be success, failure or none")
        progress = None
        raw = result.get("progress")
        if isinstance(raw, dict):
            try:
                cnt, of = int(raw.get("cnt", 0)), int(raw.get("of", 0))
            except (TypeError, ValueError):
                cnt, of = 0, 0
            if of > 0:
                progress = max(0, min(100, round(cnt * 100 / of)))
        details = status.get("details") or []
        if not isinstance(details, list):
            details = [details]
        texts = tuple(str(d).strip() for d in details[-MAX_DETAILS:] if str(d).strip())
        return cls(execution, finished, progress, texts)


def _report_for(
    feedback: Feedback, current: RolloutState, action_type: str, log_tail: tuple[str, ...]
) -> StatusReport | None:
    """The Fleetcast report a feedback stands for; None when it only carries progress.

    ``log_tail`` is every detail line the device sent for this action so far
    (SWUpdate sends its installer's messages as ``proceeding`` details and
    only a summary with the final failure).
    """
    message = "; ".join(feedback.details)
    execution, finished = feedback.execution, feedback.finished
    status: DeviceUpdateStatus | None
    if execution == "closed":
        status = DeviceUpdateStatus.FAILURE if finished == "failure" else DeviceUpdateStatus.SUCCESS
    elif execution in ("canceled", "rejected"):
        status = DeviceUpdateStatus.FAILURE
        message = message or f"{execution} by the device"
    elif execution == "downloaded":
        status = (
            DeviceUpdateStatus.SUCCESS
            if action_type == "downloadonly"
            else DeviceUpdateStatus.INSTALLING
        )
    elif execution == "download" or current in (RolloutState.SCHEDULED, RolloutState.PENDING):
        status = DeviceUpdateStatus.DOWNLOADING
    elif execution == "proceeding" and feedback.progress == 100:
        # Every chunk is in (SWUpdate: "All Chunks Installed."); the device
        # finishes (e.g. tests after a restart) before it closes the action.
        status = DeviceUpdateStatus.INSTALLING
    else:  # proceeding, scheduled, resumed while already working: progress only
        status = DeviceUpdateStatus(current.value) if current.value in _REPORTABLE else None
    if status is None:
        return None
    return StatusReport(status, feedback.progress, message, log_tail)


_REPORTABLE: Final = frozenset(s.value for s in DeviceUpdateStatus)


async def deployment_feedback(
    session: AsyncSession, device: Device, action_id: int, feedback: Feedback
) -> bool:
    """Record a feedback on a deployment action; return whether the state changed.

    Non-final feedback on an aborted deployment is accepted and ignored: the
    device learns of the abort from the ``cancelAction`` on its next poll.

    Raises:
        NotFoundError: no such action for this device.
        GoneError: the action is closed.
        StatusConflictError: it contradicts a final state already recorded.
    """
    view = await action_view(session, device, action_id)
    action = view.action
    if action.closed:
        raise GoneError(
            f"action {action_id} is closed; no more feedback is accepted",
            details={"action_id": action_id},
        )
    deployment_id = view.deployment.id
    member = await session.scalar(
        select(DeploymentDevice).where(
            DeploymentDevice.deployment_id == deployment_id,
            DeploymentDevice.device_id == device.id,
        )
    )
    assert member is not None, "action_view found it"
    log_tail = tuple([*member.log_tail, *feedback.details][-MAX_LOG_LINES:])
    report = _report_for(feedback, view.state, DdiOptions.of(view.deployment).action_type, log_tail)
    if RolloutState(member.state) not in TERMINAL:
        member.log_tail = list(log_tail)
    await session.commit()
    if report is None:
        return False
    try:
        changed = await updates.report_status(session, device, deployment_id, report)
    except DeploymentAbortedError:
        await session.rollback()
        return False
    if report.status.terminal:
        action = await _own_action(session, device, action_id)
        action.closed = True
        await session.commit()
    return changed


async def cancel_view(session: AsyncSession, device: Device, action_id: int) -> DdiAction:
    """``cancelAction/{id}``: an open action being canceled.

    Raises:
        NotFoundError: no such action, or it is not being canceled.
    """
    action = await _cancelable(session, device)
    if action is None or action.id != action_id:
        raise NotFoundError(
            f"action {action_id} is not being canceled", details={"action_id": action_id}
        )
    return action


async def cancel_feedback(
    session: AsyncSession, device: Device, action_id: int, feedback: Feedback
) -> None:
    """The device's answer to a cancel.

    ``closed`` (whatever the result) or ``canceled`` acknowledge it: the
    action closes and the device's unfinished state becomes ``aborted``.
    ``rejected`` means the device goes on (recorded in the history); other
    executions are progress notes.

    Raises:
        NotFoundError: no such action for this device.
        GoneError: the action is closed.
    """
    action = await _own_action(session, device, action_id)
    if action.closed:
        raise GoneError(f"action {action_id} is closed", details={"action_id": action_id})
    member = await session.scalar(
        select(DeploymentDevice)
        .where(
            DeploymentDevice.deployment_id == action.deployment_id,
            DeploymentDevice.device_id == device.id,
        )
        .with_for_update()
    )
    if member is None:
        raise NotFoundError(f"action {action_id} has no deployment any more")
    message = "; ".join(feedback.details)
    if feedback.execution in ("closed", "canceled"):
        action.closed = True
        stop_member(session, device, member, message or "canceled; the device acknowledged it")
    elif feedback.execution == "rejected":
        add_event(
            session,
            device.id,
            kind="status",
            state=member.state,
            message=f"the device rejected the cancel: {message}".rstrip(": "),
            deployment_id=action.deployment_id,
        )
    await session.commit()


# ----------------------------------------------------------------- configData


def _config_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_CONFIG_VALUE]


async def config_data(session: AsyncSession, device: Device, body: bytes) -> None:
    """Merge, replace or remove device attributes (``PUT configData``).

    A ``device_type`` attribute also sets the device's type.

    Raises:
        ValidationError: not JSON, no ``data`` object, unknown mode, too many keys.
    """
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValidationError(f"configData is not JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        raise ValidationError("configData needs a 'data' object")
    mode = str(data.get("mode") or "merge").lower()
    values = {str(k)[:128]: _config_value(v) for k, v in data["data"].items()}
    attributes = dict(device.attributes)
    if mode == "merge":
        attributes.update(values)
    elif mode == "replace":
        attributes = values
    elif mode == "remove":
        for key in values:
            attributes.pop(key, None)
    else:
        raise ValidationError("configData mode must be merge, replace or remove")
    if len(attributes) > MAX_CONFIG_KEYS:
        raise ValidationError(f"a device has at most {MAX_CONFIG_KEYS} attributes")
    device.attributes = attributes
    device_type = attributes.get("device_type")
    if mode != "remove" and device_type and len(device_type) <= 128:
        device.device_type = device_type
    device.updated_at = utcnow()
    await session.commit()


# ----------------------------------------------------------------- download


async def downloadable(session: AsyncSession, device: Device, artifact_id: str) -> Artifact:
    """A ``file`` artifact a DDI device may download.

    Raises:
        NotFoundError: no such artifact, or not one for DDI devices.
    """
    artifact = await session.get(Artifact, artifact_id)
    if artifact is None or artifact.format != ArtifactFormat.FILE:
        raise NotFoundError(
            f"artifact {artifact_id} not found", details={"artifact_id": artifact_id}
        )
    return artifact
