"""What one :meth:`fleetcast.agent.runner.Agent.step` achieved (re-exported by the runner)."""

from __future__ import annotations

import enum


class StepResult(enum.StrEnum):
    """What one :meth:`~fleetcast.agent.runner.Agent.step` achieved."""

    IDLE = "idle"
    """Nothing to do (the server has no update for this device)."""
    PENDING = "pending"
    """The server has not accepted this device yet; try again later."""
    REJECTED = "rejected"
    """The server rejected or decommissioned this device; stop."""
    RETRY = "retry"
    """The server could not be reached or an update was interrupted; retry after backoff."""
    REBOOT_REQUIRED = "reboot-required"
    """A trial boot (or a rollback) is armed; the device must reboot now."""
    UPDATED = "updated"
    """The new version passed its health checks and is committed."""
    ROLLED_BACK = "rolled-back"
    """The new version failed; the device runs its previous version again."""
    FAILED = "failed"
    """The update was refused or failed before the trial boot (or, in place, before
    anything was switched); nothing changed."""
    ALREADY_INSTALLED = "already-installed"
    """The offered version is the one running."""
    ABORTED = "aborted"
    """The operator aborted the deployment before the trial boot was armed (or files switched)."""
    STOPPED = "stopped"
    """:meth:`Agent.run` was asked to stop."""


__all__ = ["StepResult"]
