"""The server's state machines: device admission, deployment, and a device within a deployment."""

from __future__ import annotations

import enum
from typing import Final


class DeviceStatus(enum.StrEnum):
    """Admission status of a device."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    PREAUTHORIZED = "preauthorized"
    REJECTED = "rejected"
    DECOMMISSIONED = "decommissioned"


class DeploymentStatus(enum.StrEnum):
    """Status of a deployment; ``completed`` and ``aborted`` are final."""

    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    ABORTED = "aborted"


class RolloutState(enum.StrEnum):
    """Where one device stands in one deployment."""

    PENDING = "pending"  # its phase has not started
    SCHEDULED = "scheduled"  # offered on /next, not started yet
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    REBOOTING = "rebooting"
    SUCCESS = "success"
    FAILURE = "failure"
    ALREADY_INSTALLED = "already-installed"
    ABORTED = "aborted"
    SKIPPED = "skipped"  # incompatible device type: never offered


#: States after which nothing changes for the device in that deployment.
TERMINAL: Final = frozenset(
    {
        RolloutState.SUCCESS,
        RolloutState.FAILURE,
        RolloutState.ALREADY_INSTALLED,
        RolloutState.ABORTED,
        RolloutState.SKIPPED,
    }
)
#: The device has started working on the update (it reported progress).
IN_PROGRESS: Final = frozenset(
    {RolloutState.DOWNLOADING, RolloutState.INSTALLING, RolloutState.REBOOTING}
)
#: States in which a running deployment offers the update on ``/next``.
OFFERABLE: Final = frozenset({RolloutState.SCHEDULED}) | IN_PROGRESS
#: States that mean "the device now runs the artifact".
INSTALLED: Final = frozenset({RolloutState.SUCCESS, RolloutState.ALREADY_INSTALLED})
#: Final deployment statuses.
FINISHED: Final = frozenset({DeploymentStatus.COMPLETED, DeploymentStatus.ABORTED})
