"""The TUF gate of the agent's loop: verify an offer, and refresh while idle.

:func:`verify_offer` runs before anything of an offer is downloaded (the
runner's ``_handle_offer``); :func:`refresh_if_due` after an idle poll, every
``trust.refresh_interval``. Both go through :mod:`fleetcast.agent.trust.check`
(version report in this process, the TUF work in a child process).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from fleetcast.agent.journal import UpdateInProgress
from fleetcast.agent.slots import SlotContent
from fleetcast.agent.trust.check import check_offer, check_with_tuf, release_counter
from fleetcast.agent.trust.installed import InPlaceTargets
from fleetcast.core.wire import UpdateOffer
from fleetcast.exceptions import FleetcastError, IncompatibleError

if TYPE_CHECKING:
    from fleetcast.agent.runner import Agent

logger = logging.getLogger("fleetcast.agent")


def verify_offer(
    agent: Agent, offer: UpdateOffer, update: UpdateInProgress, running: SlotContent | None
) -> tuple[UpdateOffer, UpdateInProgress]:
    """Verify an offer with TUF before anything is downloaded (ADR 0008).

    Returns the offer with ``allow_downgrade`` as the director signed it
    (and the server offered it), and the update with the verified target.

    Raises:
        InvalidDataError: refused (untrusted metadata, no agreement, wrong
            device type, lower release counter, not the released artifact).
        TransportError: the server or a repository is unreachable (retry).
        DeviceStateError: the check failed on the device.
    """
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
