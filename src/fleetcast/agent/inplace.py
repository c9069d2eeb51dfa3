"""The in-place update flow: ``files``, ``script`` and ``module`` payloads, no slot, no reboot.

An artifact without a ``rootfs-image`` is installed into the running system.
All its payloads go in together or not at all::

    DOWNLOADING  stage every payload, in manifest order: a files archive is
      |          extracted into a staging directory next to its dest, a script
      |          is written to the state directory; each one is verified
      |          (length, both sha256) before the next. A broken download
      |          starts staging over; a bad payload -> failure, nothing switched
      v
    INSTALLED    (report installing; an abort is still honoured here)
      v
    SWITCHING    for each files payload: journal it as switched, rename
      |          dest -> backup, staging -> dest; for each module payload:
      |          journal it as switched, call its handler's ``install``; then
      |          run the scripts in manifest order (limits.script_timeout each)
      |-- a rename, an ``install`` or a script fails -> ROLLING_BACK
      v
    TESTING      the health checks, as after a trial boot
      |-- one fails -> ROLLING_BACK: every switched payload is restored from
      |               its backup; report failure rolled_back with the log tail
      v
    COMMITTING   call every module's ``commit`` (a failure -> ROLLING_BACK),
                 delete the backups, record name -> version, report success

Module payloads (:mod:`fleetcast.agent.modules`) are also asked to ``stage``
once every payload is verified (still DOWNLOADING: nothing is live yet), and
to ``rollback``, in reverse order, when the update is rolled back.

Crash safety, from the journal phase a fresh agent finds:

- ``downloading``: staging starts over (leftovers are removed first);
- ``installed``: everything is staged and verified; switching begins;
- ``switching`` / ``testing``: the agent was killed or lost power while the
  new files were live. There is no boot counter here to stop a payload that
  crashes the device from being retried forever, so the agent does not
  retry: it rolls back, like a failure, and reports ``rolled_back``;
- ``rolling-back`` / ``committing``: redone (both are idempotent).

Scripts are not undone by a rollback (only files are): a script should leave
the device as it found it when it fails, or be safe to run again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

from fleetcast.agent.client import DeviceApi
from fleetcast.agent.config import AgentConfig
from fleetcast.agent.download import with_artifact
from fleetcast.agent.health import check_env, run_command
from fleetcast.agent.install import Installer
from fleetcast.agent.inventory import InstalledVersions
from fleetcast.agent.journal import AddressedReport, JournalState, Phase, UpdateInProgress
from fleetcast.agent.modules import ModuleOutcome, ModuleTarget
from fleetcast.agent.payloads import InPlacePlan
from fleetcast.agent.results import StepResult
from fleetcast.core.wire import DeviceUpdateStatus
from fleetcast.exceptions import DeviceStateError, InvalidDataError, TransportError


class Host(Protocol):
    """What the in-place flow needs from :class:`~fleetcast.agent.runner.Agent`."""

    config: AgentConfig
    state: JournalState
    versions: InstalledVersions
    client: DeviceApi

    @property
    def _update(self) -> UpdateInProgress: ...

    def _log(self, line: str) -> None: ...

    def _transition(self, name: str, state: JournalState | None = None) -> None: ...

    def _event(self, name: str) -> None: ...

    def _report(self, status: DeviceUpdateStatus, **fields: object) -> AddressedReport: ...

    def _flush_report(self) -> bool: ...

    def _installer(self) -> Installer: ...

    def _fail(self, message: str) -> StepResult: ...

    def _download_interrupted(self, error: TransportError) -> StepResult: ...

    def _finish_updated(self, message: str) -> StepResult: ...

    def _finish_rolled_back(self, message: str) -> StepResult: ...

    def _health(self, env: dict[str, str]) -> tuple[bool, tuple[str, ...]]: ...


def _plan(agent: Host) -> InPlacePlan:
    # files_roots was checked when the offer was accepted; a configuration
    # changed since must not strand a half-done switch or rollback.
    return InPlacePlan.of(
        agent._update.offer.manifest.manifest, state_dir=agent.config.state_dir, roots=()
    )


def advance_in_place(agent: Host) -> StepResult:
    """Continue the journaled in-place update from its phase (see the module docstring).

    Raises:
        DeviceStateError: a switch, restore or cleanup failed on the device;
            the phase stays journaled and the next step tries again.
    """
    phase = agent.state.phase
    if phase is Phase.DOWNLOADING:
        return _stage(agent)
    if phase is Phase.INSTALLED:
        return _switch(agent)
    if phase in (Phase.SWITCHING, Phase.TESTING):
        what = "switching payloads" if phase is Phase.SWITCHING else "running health checks"
        return _roll_back(
            agent, f"the agent was stopped (crash or power cut) while {what}", "switch-interrupted"
        )
    if phase is Phase.COMMITTING:
        return _commit(agent)
    if phase is Phase.ROLLING_BACK:
        return _restore(agent)
    raise DeviceStateError(f"journal phase {phase.value} does not belong to an in-place update")


def discard_in_place(agent: Host) -> None:
    """Drop whatever was staged (the update was cancelled before switching)."""
    try:
        _plan(agent).discard()
    except (DeviceStateError, InvalidDataError) as e:
        agent._log(f"could not remove the staged payloads: {e}")


def _stage(agent: Host) -> StepResult:
    if not agent._flush_report():
        return StepResult.RETRY
    update = agent._update
    installer = agent._installer()
    try:
        plan = _plan(agent)
        new_dests = plan.prepare()
        with_artifact(
            agent, update.offer, lambda source: installer.stage(update.offer, source, plan)
        )
    except TransportError as e:
        result = agent._download_interrupted(e)
        if agent.state.phase is Phase.IDLE:
            discard_in_place(agent)  # given up: no retry will reuse the staging area
        return result
    except (InvalidDataError, DeviceStateError) as e:
        agent._log(f"staging failed: {e}")
        discard_in_place(agent)
        return agent._fail(str(e))
    for module in plan.modules:
        outcome = _module(agent, module, "stage")
        if not outcome.ok:
            discard_in_place(agent)
            return agent._fail(outcome.log[0])
        agent._event("module-staged")
    agent._log("every payload is staged and verified")
    report = agent._report(DeviceUpdateStatus.INSTALLING, progress=100)
    agent.state = replace(
        agent.state,
        phase=Phase.INSTALLED,
        update=replace(update, new_dests=new_dests, switched=()),
    ).queued(report)
    agent._transition("installed")
    return _switch(agent)


def _switch(agent: Host) -> StepResult:
    # "installing" must reach the server before anything goes live: an abort
    # answered here still cancels the update.
    if not agent._flush_report():
        return StepResult.RETRY
    plan = _plan(agent)
    agent._transition("switch-started", replace(agent.state, phase=Phase.SWITCHING))
    for target in plan.files:
        update = agent._update
        agent._transition(
            "payload-switching",
            replace(agent.state, update=replace(update, switched=(*update.switched, target.name))),
        )
        try:
            target.switch(
                had_previous=target.name not in update.new_dests,
                moved_aside=lambda: agent._event("dest-moved-aside"),
            )
        except DeviceStateError as e:
            return _roll_back(agent, f"files payload {target.name}: {e}", "switch-failed")
        agent._log(f"files payload {target.name}: {target.dest} switched, previous kept")
        agent._event("payload-switched")
    for module in plan.modules:
        update = agent._update
        if module.name not in update.switched:
            agent._transition(
                "payload-switching",
                replace(
                    agent.state, update=replace(update, switched=(*update.switched, module.name))
                ),
            )
        outcome = _module(agent, module, "install")
        if not outcome.ok:
            return _roll_back(agent, outcome.log[0], "switch-failed")
        agent._event("module-installed")
    env = _env(agent)
    timeout = agent.config.limits.script_timeout
    for script in plan.scripts:
        agent._log(f"running script payload {script.name}")
        code, output = run_command(
            [str(script.path)], timeout=timeout, env=plan.script_env(script, env)
        )
        for line in output:
            agent._log(line)
        if code is None:
            return _roll_back(
                agent, f"script payload {script.name} timed out after {timeout:g}s", "switch-failed"
            )
        if code != 0:
            return _roll_back(
                agent, f"script payload {script.name} failed (exit {code})", "switch-failed"
            )
        agent._event("script-passed")
    agent._transition("checks-started", replace(agent.state, phase=Phase.TESTING))
    ok, log = agent._health(env)
    for line in log:
        agent._log(line)
    if not ok:
        return _roll_back(agent, "health checks failed after the in-place update", "health-failed")
    agent._transition("health-passed", replace(agent.state, phase=Phase.COMMITTING))
    return _commit(agent)


def _module(agent: Host, module: ModuleTarget, verb: str) -> ModuleOutcome:
    manifest = agent._update.offer.manifest.manifest
    modules = agent.config.modules
    outcome = module.run(
        verb,
        modules_dir=modules.dir,
        timeout=modules.timeout,
        env=_env(agent),
        artifact=(manifest.name, manifest.version),
    )
    for line in outcome.log:
        agent._log(line)
    return outcome


def _env(agent: Host) -> dict[str, str]:
    update = agent._update
    manifest = update.offer.manifest.manifest
    return check_env(
        slot=update.target_slot,
        slot_path=str(agent.config.slots.path(update.target_slot)),
        name=manifest.name,
        version=manifest.version,
    )


def _roll_back(agent: Host, reason: str, transition: str) -> StepResult:
    agent._log(f"{reason}; rolling back")
    agent._transition(
        transition,
        replace(
            agent.state,
            phase=Phase.ROLLING_BACK,
            update=replace(agent._update, failure=reason),
        ),
    )
    return _restore(agent)


def _restore(agent: Host) -> StepResult:
    update = agent._update
    plan = _plan(agent)
    for module in reversed(plan.modules):
        if module.name in update.switched:
            # A failed rollback cannot be retried into success by the agent:
            # it is logged (and reported) and the other payloads still go back.
            _module(agent, module, "rollback")
            agent._event("module-rolled-back")
    for target in reversed(plan.files):
        if target.name in update.switched:
            target.restore(had_previous=target.name not in update.new_dests)
            agent._log(f"files payload {target.name}: {target.dest} restored")
            agent._event("payload-restored")
        else:
            target.clean(keep_backup=True)
    plan.discard()
    return agent._finish_rolled_back(
        f"in-place update rolled back: {update.failure or 'it did not complete'}"
    )


def _commit(agent: Host) -> StepResult:
    manifest = agent._update.offer.manifest.manifest
    plan = _plan(agent)
    for module in plan.modules:
        outcome = _module(agent, module, "commit")
        if not outcome.ok:
            return _roll_back(agent, outcome.log[0], "switch-failed")
        agent._event("module-committed")
    for target in plan.files:
        target.clean(keep_backup=False)
    plan.discard()
    agent._event("backups-removed")
    agent.versions.set(manifest.name, manifest.version)
    agent._event("installed-recorded")
    return agent._finish_updated(f"committed {manifest.name} {manifest.version} in place")


__all__ = ["Host", "advance_in_place", "discard_in_place"]
