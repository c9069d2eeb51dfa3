"""The TUF gate of the agent's loop: verify an offer, and refresh while idle.

:func:`verify_offer` runs before anything of an offer is downloaded (the
runner's ``_handle_offer``); :func:`refresh_if_due` after an idle poll, every
``trust.refresh_interval``. Both go through :mod:`fleetcast.agent.trust.check`
(version report in this process, the TUF work in a child process).

A refused check is not final at once. A bit flipped on the way, or an answer
cut short, makes metadata fail its signature, length or hash exactly as a
forgery does, and the device cannot tell them apart. So a refusal is counted
(:class:`RefusedChecks`) and the offer checked again on a later poll, from
scratch: a new nonce and version report, freshly downloaded metadata, the
offer fetched again. Only ``limits.max_retries`` refusals in a row for one
deployment end it with a failure report carrying the last reason. Nothing
is downloaded or written to a slot before a check passes, so an attacker
gains nothing from the extra checks but a later failure report. The count
lives in memory: a restart starts it again (at most ``max_retries`` more
checks per boot, never an install).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from fleetcast.agent.journal import UpdateInProgress
from fleetcast.agent.slots import SlotContent
from fleetcast.agent.trust.check import check_offer, check_with_tuf, release_counter
from fleetcast.agent.trust.installed import InPlaceTargets
from fleetcast.core.wire import UpdateOffer
from fleetcast.exceptions import FleetcastError, IncompatibleError, InvalidDataError

if TYPE_CHECKING:
    from fleetcast.agent.runner import Agent

logger = logging.getLogger("fleetcast.agent")


@dataclass
class RefusedChecks:
    """TUF checks of one deployment refused in a row (see the module docstring).

    Attributes:
        deployment_id: the deployment whose checks are counted.
        count: its refused checks since one last passed (or since the count started).
    """

    deployment_id: str | None = None
    count: int = 0

    def add(self, deployment_id: str) -> int:
        """Count a refused check of ``deployment_id``; return how many in a row."""
        if deployment_id != self.deployment_id:
            self.deployment_id, self.count = deployment_id, 0
        self.count += 1
        return self.count

    def clear(self) -> None:
        self.deployment_id, self.count = None, 0


def verify_offer(
    agent: Agent, offer: UpdateOffer, update: UpdateInProgress, running: SlotContent | None
) -> tuple[UpdateOffer, UpdateInProgress] | None:
    """Verify an offer with TUF before anything is downloaded (ADR 0008).

    Returns:
        The offer with ``allow_downgrade`` as the director signed it (and the
        server offered it), and the update with the verified target; ``None``
        when the check was refused but fewer than ``limits.max_retries`` times
        in a row for this deployment: report nothing, check again later.

    Raises:
        InvalidDataError: refused ``limits.max_retries`` times in a row
            (untrusted metadata, no agreement, wrong device type, lower release
            counter, not the released artifact); the reason is the last check's.
        TransportError: the server or a repository is unreachable (retry).
        DeviceStateError: the check failed on the device.
    """
    refused = agent._trust_refusals
    try:
        verified = _verify_offer(agent, offer, update, running)
    except InvalidDataError as e:
        attempt, limit = refused.add(offer.deployment_id), agent.config.limits.max_retries
        what = f"TUF check {attempt} of {limit} of deployment {offer.deployment_id} refused"
        if attempt >= limit:
            refused.clear()
            agent._log(f"{what}; giving up")
            raise  # the runner reports this, the last check's reason
        # A damaged transfer and an attack look the same: ask again, from scratch.
        agent._log(f"{what}: {e}; checking again with fresh metadata")
        return None
    refused.clear()
    return verified


def _verify_offer(
    agent: Agent, offer: UpdateOffer, update: UpdateInProgress, running: SlotContent | None
) -> tuple[UpdateOffer, UpdateInProgress]:
    from fleetcast.agent.install import is_in_place  # the update machinery: not at idle

    manifest = offer.manifest.manifest
    running_target = running.target if running is not None else None
    target = check_with_tuf(
        agent.config,
        agent.client,
        agent._device_key,
        installed=running_target,
        deployment_id=offer.deployment_id,
    )
    agent._trust_refreshed = time.monotonic()
    if target is None:
        raise IncompatibleError("TUF: the director directs no update to this device")
    # The floor: the running root file system's release, or for an
    # in-place artifact the last release of that name installed in place.
    floor = (
        InPlaceTargets(agent.config.state_dir).get(manifest.name)
        if is_in_place(manifest)
        else running_target
    )
    verified = check_offer(
        target,
        offer,
        device_type=agent.config.device_type,
        installed_counter=release_counter(floor),
    )
    agent._log(f"TUF: {verified.path} verified, release counter {verified.release_counter}")
    offer = replace(offer, allow_downgrade=offer.allow_downgrade and target.allow_downgrade)
    return offer, replace(update, offer=offer, target=verified)


def refresh_if_due(agent: Agent) -> None:
    """Idle for ``refresh_interval``: send a version report, refresh both repositories.

    Failures are logged, not raised: an idle device keeps polling.
    """
    trust = agent.config.trust
    if not agent.config.tuf or trust is None:
        return
    now, last = time.monotonic(), agent._trust_refreshed
    if last is not None and now - last < trust.refresh_interval:
        return
    agent._trust_refreshed = now
    running = agent.installed.get(agent.bootloader.active_slot())
    try:
        check_with_tuf(
            agent.config,
            agent.client,
            agent._device_key,
            installed=running.target if running is not None else None,
            deployment_id=None,
        )
    except FleetcastError as e:
        logger.warning("TUF refresh failed: %s", e)
