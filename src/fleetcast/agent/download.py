"""The download step of an A/B update: the new image into the inactive slot.

:func:`download` runs in phase ``DOWNLOADING`` (also when a fresh agent
resumes it after a power cut): it tries the offered delta first (ADR 0005;
only with the built-in writer, since the running slot is its source, and
never once abandoned or when a full download is already half done), else
streams the whole artifact into the slot, resuming where the journal says.
With ``[trust]`` the artifact file is also held to its TUF target's length
and sha256 (:func:`with_artifact`, also used by the in-place flow). The
slot then holds the verified image; the journal says ``INSTALLED`` and the
runner arms the trial boot.

Imported when an update starts, not by an idle agent (it pulls in the
artifact reader and the delta engines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from fleetcast.agent.client import DeviceApi
from fleetcast.agent.config import AgentConfig
from fleetcast.agent.delta import install_delta, usable_delta
from fleetcast.agent.install import ByteSource
from fleetcast.agent.installers import BuiltinWriter
from fleetcast.agent.journal import Phase
from fleetcast.agent.results import StepResult
from fleetcast.core.wire import DeviceUpdateStatus, UpdateOffer
from fleetcast.exceptions import (
    DeviceStateError,
    InvalidDataError,
    ServerResponseError,
    TransportError,
)

if TYPE_CHECKING:
    from fleetcast.agent.runner import Agent


def download(agent: Agent) -> StepResult:
    """Put the new image into the inactive slot, then arm the trial boot."""
    if not agent._flush_report():
        return StepResult.RETRY
    update = agent._update
    offer = update.offer
    # The slot is about to change: it holds no known artifact any more.
    agent.installed.set(update.target_slot, None)
    # The slot itself, or the spool file of an external installer (RAUC, SWUpdate).
    target = agent.slot_installer.target(update.target_slot)
    try:
        if not _try_delta(agent, target):
            _install_full(agent, offer, target)
        agent.watchdog.alive(agent.config.installer.timeout + 60)
        agent.slot_installer.write(target, update.target_slot, agent._log)
    except TransportError as e:
        return agent._download_interrupted(e)
    except (InvalidDataError, DeviceStateError) as e:
        agent._log(f"install into slot {update.target_slot} failed: {e}")
        return agent._fail(str(e))
    agent._log(f"slot {update.target_slot} holds the verified image")
    report = agent._report(DeviceUpdateStatus.INSTALLING, progress=100)
    agent.state = replace(
        agent.state, phase=Phase.INSTALLED, update=replace(agent._update, resume=None)
    ).queued(report)
    agent._transition("installed")
    try:
        agent.slot_installer.cleanup()
    except DeviceStateError as e:
        agent._log(f"could not remove the spooled payload: {e}")
    return agent._arm()


def _try_delta(agent: Agent, target: Path) -> bool:
    """Rebuild the image from the offered delta; False: install the full artifact.

    Raises:
        TransportError: the delta download broke off (it starts over next time).
        DeviceStateError: a slot cannot be read or written.
    """
    update = agent._update
    if update.delta_abandoned or update.resume is not None:
        return False
    if not isinstance(agent.slot_installer, BuiltinWriter):
        return False
    delta = usable_delta(update.offer, agent.installed.get(update.previous_slot))
    if delta is None:
        return False
    agent._log(
        f"applying a {delta.engine} delta of {delta.size} bytes "
        f"from {delta.source_version} (full artifact: {update.offer.artifact_size})"
    )
    try:
        install_delta(
            update.offer,
            delta,
            source_slot=agent.config.slots.path(update.previous_slot),
            target_slot=target,
            source=agent.client.delta_source(delta),
            progress=agent._progress,
        )
    except ServerResponseError as e:
        if e.status_code >= 500 or e.status_code == 429:
            raise
        return _abandon_delta(agent, f"the server refused the delta: {e}")
    except InvalidDataError as e:
        return _abandon_delta(agent, str(e))
    agent._log("delta applied; the image matches the signed manifest")
    return True


def _abandon_delta(agent: Agent, reason: str) -> bool:
    agent._log(f"delta not usable ({reason}); installing the full artifact")
    update = replace(agent._update, delta_abandoned=True)
    agent._transition("delta-abandoned", replace(agent.state, update=update))
    return False


def _install_full(agent: Agent, offer: UpdateOffer, target: Path) -> None:
    """Stream the whole artifact into ``target`` (resuming where the journal says).

    Raises:
        TransportError: the download broke off.
        InvalidDataError: the artifact does not match what was signed.
        DeviceStateError: the slot cannot be written.
    """
    installer = agent._installer()
    resume = agent._update.resume
    with_artifact(
        agent, offer, lambda source: installer.install(offer, target, source, resume=resume)
    )


class ArtifactSite(Protocol):
    """What :func:`with_artifact` needs: the agent's configuration and client."""

    @property
    def config(self) -> AgentConfig: ...

    @property
    def client(self) -> DeviceApi: ...


def with_artifact(
    site: ArtifactSite, offer: UpdateOffer, use: Callable[[ByteSource], None]
) -> None:
    """Hand the offered artifact to ``use``; with TUF, also check the whole file.

    The offer's size and sha256 are the TUF target's (checked before the
    download started): the whole file must match before anything is armed
    or switched, on top of the per-payload hashes of the pinned manifest.

    Raises:
        TransportError: the download broke off.
        IntegrityError: the file is longer than, or differs from, the target.
    """
    source = site.client.artifact_source(offer)
    if not site.config.tuf:
        use(source)
        return
    from fleetcast.agent.trust.artifact import CheckedArtifactSource

    checked = CheckedArtifactSource(
        source,
        length=offer.artifact_size,
        sha256=offer.artifact_sha256,
        chunk=site.config.limits.download_chunk,
    )
    try:
        use(checked)
        checked.finish()
    finally:
        checked.close()
