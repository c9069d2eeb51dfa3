"""The update state machine: check, download, verify, install, reboot, commit.

One :meth:`Agent.step` is one poll cycle. The states, and what the device
reports to the server on the way (``docs/device-api.md``)::

    IDLE --GET /next--> offer
      | [trust]: signed version report, then the TUF child checks director
      |   and image repositories agree (fleetcast.agent.trust); unreachable
      |   -> retry later; refused         -> check again on a later poll;
      |   refused limits.max_retries times in a row -> report failure, IDLE
      | same version as the running slot  -> report already-installed, IDLE
      | bad signature / incompatible /
      |   downgrade refused               -> report failure, IDLE (no slot touched)
      v
    DOWNLOADING  (report downloading + progress; checkpoint every few MiB)
      | stream into the inactive slot; a broken connection resumes later
      | from the last checkpoint; hash mismatch -> report failure, IDLE
      | (with a usable delta offered: rebuild the image from the running
      |  slot + delta instead; any delta problem -> the full artifact)
      | 409 deployment_aborted             -> cancel, IDLE
      v
    INSTALLED    (report installing; an abort is still honoured here)
      | arm_trial(inactive slot)
      v
    ARMED        (report rebooting)  -> step() returns REBOOT_REQUIRED
      |
    [reboot: the bootloader tries the new slot under its boot counter]
      |
      +-- the new slot never comes up: after ``bootlimit`` tries the
      |   bootloader boots the old slot -> report failure rolled_back, IDLE
      v
    TESTING      (running from the new slot: health checks)
      |-- all pass  -> COMMITTING: commit(), record the new version,
      |                report success, send inventory, IDLE (UPDATED)
      '-- one fails -> ROLLING_BACK: rollback(), REBOOT_REQUIRED
                         [reboot into the old slot]
                         -> report failure rolled_back with the log tail,
                            send inventory, IDLE (ROLLED_BACK)

Crash safety: every phase is written to the journal *before* its side
effect is assumed done, and a fresh :class:`Agent` decides what to do from
the journal phase *and* what the bootloader says (running slot, trial
armed or not). So a kill or power cut at any transition either resumes the
update or rolls it back, and the device always has a committed slot to
boot. Status reports are queued in the journal first, each numbered with
the device's next ``seq``, and sent oldest first; each leaves the queue only
once the server took it, so a report that could not be delivered (the server
down while the device rebooted) is sent after a crash or reboot, before any
later one (the server ignores exact repeats and reports overtaken by a newer
``seq``).

An artifact without a ``rootfs-image`` (only ``files`` and ``script``
payloads) takes the in-place path instead, without a slot or a reboot:
stage and verify every payload, switch them all, run the scripts and the
health checks, then commit or roll every payload back
(:mod:`fleetcast.agent.inplace`). Installed versions are tracked by artifact
name (:mod:`fleetcast.agent.inventory`): an offer is checked against the
installed version of the artifact with the *same name*.

``on_transition`` is a test hook: it is called with a transition name
(:data:`TRANSITIONS`) right after that transition's journal write and side
effect; tests raise from it to simulate a power cut at exactly that point.

:func:`run_agent` is the supervisor: it runs an :class:`Agent` until it
needs a reboot, reboots (the simulated bootloader boots in process; a real
device runs ``reboot.command``), and starts a *fresh* :class:`Agent` from
disk.
"""

from __future__ import annotations

import logging
import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fleetcast.agent.bootloader import Bootloader, make_bootloader, other_slot, simulate_boot
from fleetcast.agent.client import DeviceApi, DeviceClient, backoff_delay
from fleetcast.agent.config import AgentConfig
from fleetcast.agent.decryption import (
    X25519_ATTRIBUTE,
    load_decryption_keys,
    load_or_create_x25519_key,
    public_hex,
)
from fleetcast.agent.health import check_env, run_configured_checks
from fleetcast.agent.identity import load_or_create_device_key
from fleetcast.agent.installers import SlotInstaller, make_slot_installer
from fleetcast.agent.inventory import InstalledVersions, installed_as, make_inventory
from fleetcast.agent.journal import (
    AddressedReport,
    Journal,
    JournalState,
    Phase,
    ResumePoint,
    UpdateInProgress,
    seq_after_loss,
)
from fleetcast.agent.push import PushListener
from fleetcast.agent.results import StepResult
from fleetcast.agent.slots import InstalledArtifacts, SlotContent
from fleetcast.agent.trust.gate import RefusedChecks, refresh_if_due, verify_offer
from fleetcast.agent.watchdog import SystemdWatchdog
from fleetcast.core.keyfiles import load_key_files
from fleetcast.core.signing import public_key_from_pem
from fleetcast.core.wire import DeviceUpdateStatus, StatusReport, UpdateOffer
from fleetcast.exceptions import (
    DeviceStateError,
    FleetcastError,
    IncompatibleError,
    InvalidDataError,
    ServerResponseError,
    TransportError,
    UsageError,
)

if TYPE_CHECKING:
    from fleetcast.agent.install import Installer, InstallProgress

# The update machinery (artifact reader, zstd, tar, delta engines, update
# modules) is imported inside the methods that run an update: an idle agent
# that only polls must stay small (docs/agent.md, idle RSS target).

logger = logging.getLogger("fleetcast.agent")

TransitionHook = Callable[[str], None]

TRANSITIONS: Final = (
    "download-started",  # journal DOWNLOADING written; nothing written to the slot yet
    "reported-downloading",
    "checkpoint",  # slot synced, resume point journaled
    "installed",  # slot complete and verified; journal INSTALLED
    "reported-installing",
    "armed",  # bootloader armed for the new slot; journal ARMED
    "reported-rebooting",
    "trial-started",  # booted into the new slot; journal TESTING
    "health-passed",  # journal COMMITTING
    "committed",  # bootloader committed the new slot
    "installed-recorded",  # slot record names the new version
    "update-finished",  # journal IDLE with the success report pending
    "reported-success",
    "health-failed",  # journal ROLLING_BACK
    "rollback-armed",  # bootloader points back at the old slot
    "rolled-back",  # booted into the old slot; journal IDLE with the failure pending
    "reported-failure",
    "update-failed",  # refused or failed before arming; journal IDLE, failure pending
    "reported-already-installed",
    "update-aborted",  # deployment aborted before arming; journal IDLE
    "update-already-installed",  # journal IDLE with already-installed pending
    "download-interrupted",  # connection lost; attempts counted, resume later
    "delta-abandoned",  # the offered delta failed or was refused; journal says: full image
    "report-dropped",  # the server refused a report for good (conflict, not found)
    "journal-reset",  # the journal was unreadable; started over from the committed slot
    # In-place updates (files / script payloads; "download-started", "installed",
    # "health-passed", "health-failed", "installed-recorded", "update-finished",
    # "rolled-back" and the reports are shared with the A/B flow):
    "switch-started",  # every payload staged and verified; journal SWITCHING
    "payload-switching",  # journal names the files payload whose renames begin
    "dest-moved-aside",  # dest renamed to its backup; staging not in place yet
    "payload-switched",  # dest holds the new tree, the backup the old one
    "script-passed",  # a script payload exited 0
    "checks-started",  # journal TESTING: health checks after an in-place switch
    "switch-failed",  # a rename or script failed; journal ROLLING_BACK
    "switch-interrupted",  # restarted in SWITCHING/TESTING; journal ROLLING_BACK
    "payload-restored",  # a switched files payload is back to its previous tree
    "backups-removed",  # the in-place update committed: backups and staging deleted
    # Update modules (module payloads, in place):
    "module-staged",  # a handler's stage verb succeeded (still DOWNLOADING)
    "module-installed",  # a handler's install verb succeeded (journal names it switched)
    "module-committed",  # a handler's commit verb succeeded (COMMITTING)
    "module-rolled-back",  # a handler's rollback verb ran (ROLLING_BACK)
)


class _DeploymentAbortedError(Exception):
    """Internal signal: the server answered 409 deployment_aborted before arming."""


def _load_trusted_keys(paths: list[Path]) -> list[Ed25519PublicKey]:
    return load_key_files(
        paths, public_key_from_pem, what="trusted key", kind="an Ed25519 public key"
    )


class Agent:
    """The device agent: one instance per boot of the device.

    All state that matters is on disk (journal, slot record, bootloader
    environment, device key), so a new instance continues where an old one
    was killed.

    Args:
        config: the agent configuration.
        client: the device-API client (default: :class:`DeviceClient` over HTTP).
        bootloader: the A/B backend (default: from ``config.bootloader``).
        on_transition: test hook called with each transition name.
        watchdog: systemd's watchdog, kept alive while steps keep their bounds
            (default: none).

    Raises:
        UsageError: a trusted key cannot be loaded.
        DeviceStateError: the state directory or device key is unusable.
    """

    def __init__(
        self,
        config: AgentConfig,
        *,
        client: DeviceApi | None = None,
        bootloader: Bootloader | None = None,
        on_transition: TransitionHook | None = None,
        watchdog: SystemdWatchdog | None = None,
    ) -> None:
        self.config = config
        try:
            config.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DeviceStateError(f"cannot create state directory {config.state_dir}: {e}") from e
        self.trusted_keys = _load_trusted_keys(config.trusted_keys)
        key = load_or_create_device_key(config.state_dir)
        # Signs TUF version reports ([trust]); it never leaves this process.
        self._device_key = key
        self._trust_refreshed: float | None = None
        # Refused TUF checks of the offered deployment (a damaged transfer looks the same).
        self._trust_refusals = RefusedChecks()
        # Encrypted payloads (ADR 0008): this device's own X25519 key, then group keys.
        device_x25519 = load_or_create_x25519_key(config.state_dir)
        self.decryption_keys = [device_x25519, *load_decryption_keys(config.decryption_keys)]
        self._x25519_public = public_hex(device_x25519)
        self.client: DeviceApi = client if client is not None else DeviceClient(config, key)
        self.bootloader = (
            bootloader if bootloader is not None else make_bootloader(config.bootloader)
        )
        self.slot_installer: SlotInstaller = make_slot_installer(config, self.bootloader)
        self.watchdog = watchdog if watchdog is not None else SystemdWatchdog({})
        self.journal = Journal(config.state_dir)
        self.installed = InstalledArtifacts(config.state_dir)
        self.versions = InstalledVersions(config.state_dir)
        self.state = self.journal.load()
        self._hook = on_transition
        self._started = False
        self._inventory_sent = False
        self._etag: str | None = None
        # Set by the MQTT push listener (when configured) to end a wait early.
        self._wake = threading.Event()
        self._push: PushListener | None = None

    def close(self) -> None:
        """Close the connection to the server (and to the MQTT broker)."""
        if self._push is not None:
            self._push.close()
            self._push = None
        self.client.close()

    def _start_push(self) -> None:
        """Subscribe to check-in notices once MQTT is configured and the device id known."""
        device_id = getattr(self.client, "device_id", None)
        if self._push is not None or self.config.mqtt_url is None or device_id is None:
            return
        self._push = PushListener(
            self.config.mqtt_url,
            topic_prefix=self.config.mqtt_topic_prefix,
            device_id=device_id,
            wake=self._wake,
        )
        self._push.start()

    def _wait(self, stop: threading.Event, delay: float) -> None:
        """Wait ``delay`` seconds, or until stopped or a push notice arrives."""
        if self._push is None:
            stop.wait(delay)
            return
        deadline = time.monotonic() + delay
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._wake.wait(min(remaining, 0.5)):
                self._wake.clear()
                return

    # ------------------------------------------------------------------ journal helpers

    def _log(self, line: str) -> None:
        logger.info("%s", line)
        self.state = self.state.logged(line, max_lines=self.config.limits.max_log_lines)

    def _transition(self, name: str, state: JournalState | None = None) -> None:
        if state is not None:
            self.state = state
        self.journal.save(self.state)
        if self._hook is not None:
            self._hook(name)

    def _event(self, name: str) -> None:
        """A side effect happened that the journal already anticipates."""
        if self._hook is not None:
            self._hook(name)

    @property
    def _update(self) -> UpdateInProgress:
        if self.state.update is None:
            raise UsageError(f"journal phase {self.state.phase} has no update")
        return self.state.update

    def _report(self, status: DeviceUpdateStatus, **fields: object) -> AddressedReport:
        report = StatusReport(status, **fields)  # type: ignore[arg-type]
        return AddressedReport(self._update.deployment_id, report)

    def _failure(self, message: str, *, rolled_back: bool) -> AddressedReport:
        return self._report(
            DeviceUpdateStatus.FAILURE,
            message=message,
            log_tail=self.state.log[-self.config.limits.max_log_lines :],
            rolled_back=rolled_back,
        )

    def _flush_report(self) -> bool:
        """Send the queued reports, oldest first; return whether none is left.

        A report leaves the queue (journaled) only once the server took it or
        refused it for good; the first one that cannot be delivered stops the
        flush, so the server never hears a later report before an earlier one.

        Raises:
            _DeploymentAbortedError: the deployment was aborted and the update
                can still be cancelled (not armed yet).
            ServerResponseError: ``device_pending`` / ``device_rejected``.
        """
        while self.state.reports:
            pending, rest = self.state.reports[0], self.state.reports[1:]
            try:
                self.client.report_status(pending.deployment_id, pending.report)
            except ServerResponseError as e:
                if e.code in ("device_pending", "device_rejected"):
                    raise
                # Only the server's own refusal (a 4xx in its error shape) ends a report;
                # a 401 (sign in again) or an answer without a code (a proxy, a corrupted
                # reply) says nothing about the report itself: keep it and send it again.
                if e.status_code >= 500 or e.status_code in (401, 429) or e.code is None:
                    self._log(f"status report {pending.report.status} not delivered yet: {e}")
                    return False
                cancellable = self.state.phase in (Phase.DOWNLOADING, Phase.INSTALLED)
                # not_found: the server does not know this device in that deployment (the
                # offer's unsigned envelope was corrupted on the way, say): install nothing
                # for it; the server offers the real deployment again.
                if e.code in ("deployment_aborted", "not_found") and cancellable:
                    raise _DeploymentAbortedError(str(e)) from e
                # status_conflict, not_found, an abort after arming: repeating
                # cannot change the answer, so drop the report and go on with the next.
                self._log(f"server refused status report {pending.report.status}: {e}")
                self._transition("report-dropped", replace(self.state, reports=rest))
                continue
            except TransportError as e:
                self._log(f"status report {pending.report.status} not delivered yet: {e}")
                return False
            self.state = replace(self.state, reports=rest, last_report=pending)
            self._transition(f"reported-{pending.report.status.value}")
        return True

    def _send_inventory(self) -> None:
        active = self.bootloader.active_slot()
        self.client.send_inventory(
            make_inventory(
                device_type=self.config.device_type,
                attributes={**self.config.attributes, X25519_ATTRIBUTE: self._x25519_public},
                active_slot=active,
                running=self.installed.get(active),
                in_place=self.versions.load(),
            )
        )
        self._inventory_sent = True

    def _try_inventory(self) -> None:
        try:
            self._send_inventory()
        except TransportError as e:
            self._log(f"inventory not sent yet: {e}")

    # ------------------------------------------------------------------ public API

    def step(self) -> StepResult:
        """Run one poll cycle (or advance the update in progress by one stage).

        Returns:
            What happened; see :class:`StepResult`.

        Raises:
            DeviceStateError: the device cannot proceed (bootloader environment
                or slot unusable); the update stays journaled for a later try.
        """
        try:
            if not self._started:
                self._started = True
                startup = self._startup()
                if startup is not None:
                    return startup
            if self.state.phase is not Phase.IDLE:
                return self._advance()
            return self._idle_step()
        except ServerResponseError as e:
            if e.code == "device_rejected":
                logger.error("the server rejected this device: %s", e)
                return StepResult.REJECTED
            if e.code == "device_pending":
                logger.info("waiting for an operator to accept this device")
                return StepResult.PENDING
            logger.warning("server refused: %s", e)
            return StepResult.RETRY
        except TransportError as e:
            logger.warning("server unreachable: %s", e)
            return StepResult.RETRY

    def run(self, stop: threading.Event | None = None) -> StepResult:
        """Step until a reboot is needed, the device is rejected, or ``stop`` is set.

        Between idle polls it waits so that two polls start at least
        ``poll_interval`` seconds apart (a long poll that the server held
        counts towards that); after a failure it backs off exponentially.

        Returns:
            ``REBOOT_REQUIRED``, ``REJECTED`` or ``STOPPED``.
        """
        stop = stop if stop is not None else threading.Event()
        limits = self.config.limits
        failures = 0
        # The longest an ordinary step may take: a long poll plus every retry of a call.
        step_bound = limits.request_timeout * (limits.max_retries + 1) + (
            self.config.long_poll + limits.backoff_cap * limits.max_retries
        )
        while not stop.is_set():
            started = time.monotonic()
            self.watchdog.alive(step_bound)
            try:
                result = self.step()
            except FleetcastError as e:
                logger.error("agent step failed: %s", e)
                result = StepResult.RETRY
            if result in (StepResult.REBOOT_REQUIRED, StepResult.REJECTED):
                return result
            if result is StepResult.RETRY:
                failures += 1
                delay = backoff_delay(
                    failures, base=limits.backoff_base, cap=limits.backoff_cap, rng=random.random
                )
            else:
                failures = 0
                delay = 0.0
                if result in (StepResult.IDLE, StepResult.PENDING):
                    delay = max(0.0, self.config.poll_interval - (time.monotonic() - started))
            self._start_push()
            self.watchdog.alive(delay + step_bound)
            self._wait(stop, delay)
        return StepResult.STOPPED

    # ------------------------------------------------------------------ startup and idle

    def _startup(self) -> StepResult | None:
        if self.journal.problem is not None:
            # Without a journal we cannot know what the trial was for, so we
            # cannot vouch for it: keep (or go back to) the committed slot.
            message = self.journal.problem
            reboot = False
            if self.bootloader.in_trial():
                committed = self.bootloader.committed_slot()
                self.bootloader.rollback()
                reboot = self.bootloader.active_slot() != committed
                message += f"; abandoned the trial boot, keeping committed slot {committed}"
            else:
                message += f"; keeping committed slot {self.bootloader.committed_slot()}"
            logger.warning("%s", message)
            self._transition(
                "journal-reset",
                JournalState(report_seq=seq_after_loss()).logged(
                    message, max_lines=self.config.limits.max_log_lines
                ),
            )
            if reboot:
                return StepResult.REBOOT_REQUIRED
        for problem in (self.installed.problem, self.versions.problem):
            if problem is not None:
                self._log(problem)
        return None

    def _idle_step(self) -> StepResult:
        if not self._flush_report():
            return StepResult.RETRY
        if not self._inventory_sent:
            self._send_inventory()
        answer = self.client.next_update(wait=self.config.long_poll, etag=self._etag)
        if answer.offer is None:
            self._etag = answer.etag
            refresh_if_due(self)
            return StepResult.IDLE
        # Forget the ETag of an answer that carried an offer: a later 304 must
        # mean "still nothing to do", never "the same offer as before".
        self._etag = None
        return self._handle_offer(answer.offer)

    def _installer(self) -> Installer:
        from fleetcast.agent.install import Installer

        installer = Installer(
            device_type=self.config.device_type,
            trusted_keys=self.trusted_keys,
            limits=self.config.limits,
            checkpoint=self._checkpoint,
            progress=self._progress,
            files_roots=self.config.files_roots,
            state_dir=self.config.state_dir,
            decryption_keys=self.decryption_keys,
        )
        return installer

    def _handle_offer(self, offer: UpdateOffer) -> StepResult:
        from fleetcast.agent.install import is_in_place
        from fleetcast.agent.modules import check_handlers

        last = self.state.last_report
        if (
            last is not None
            and last.deployment_id == offer.deployment_id
            and last.report.status.terminal
        ):
            # We finished this deployment but the server still offers it:
            # our final report was lost. Repeat it (the server ignores repeats).
            self.state = self.state.requeued(last)
            self._flush_report()
            return StepResult.IDLE
        installer = self._installer()
        active = self.bootloader.active_slot()
        running = self.installed.get(active)
        in_place = self.versions.load()
        manifest = offer.manifest.manifest
        installed = installed_as(manifest.name, running, in_place)
        what = f"{manifest.name} {manifest.version} (deployment {offer.deployment_id})"
        if is_in_place(manifest):
            update = UpdateInProgress(offer, active, other_slot(active), installed)
            where = "in place"
        else:
            update = UpdateInProgress(offer, other_slot(active), active, running)
            where = f"into slot {update.target_slot}"
        try:
            if self.config.tuf:
                verified = verify_offer(self, offer, update, running)
                if verified is None:
                    return StepResult.RETRY  # refused, but checked again before it is final
                offer, update = verified
            if self.trusted_keys or not self.config.tuf:
                # With TUF and no vendor keys, the image repository's offline
                # targets keys vouch for the manifest (custom.manifest_sha256).
                installer.verify_signature(offer)
            _check_name_kind(manifest.name, is_in_place(manifest), running, in_place)
            if installer.is_same_version(manifest, installed):
                self._log(f"{what} is already installed")
                self.state = self.state.queued(
                    AddressedReport(
                        offer.deployment_id, StatusReport(DeviceUpdateStatus.ALREADY_INSTALLED)
                    )
                )
                self._transition("update-already-installed")
                self._flush_report()
                return StepResult.ALREADY_INSTALLED
            installer.check_offer(offer, installed)
            if is_in_place(manifest):
                check_handlers(manifest, self.config.modules.dir)
            else:
                self.slot_installer.check(manifest)
        except InvalidDataError as e:
            self._log(f"refused {what}: {e}")
            report = AddressedReport(
                offer.deployment_id,
                StatusReport(
                    DeviceUpdateStatus.FAILURE,
                    message=str(e),
                    log_tail=self.state.log[-self.config.limits.max_log_lines :],
                ),
            )
            self._transition("update-failed", self.state.queued(report))
            self._flush_report()
            return StepResult.FAILED
        self.state = replace(self.state, phase=Phase.DOWNLOADING, update=update)
        self._log(f"installing {what} {where}")
        self.state = self.state.queued(self._report(DeviceUpdateStatus.DOWNLOADING, progress=0))
        self._transition("download-started")
        return self._advance()

    # ------------------------------------------------------------------ the update

    def _advance(self) -> StepResult:
        """Continue the journaled update from what the journal and bootloader say."""
        from fleetcast.agent.inplace import discard_in_place
        from fleetcast.agent.install import is_in_place

        try:
            return self._advance_unguarded()
        except _DeploymentAbortedError as e:
            self._log(f"deployment aborted by the operator before the trial boot: {e}")
            if is_in_place(self._update.offer.manifest.manifest):
                discard_in_place(self)
            # The server refuses every report of an aborted deployment before the trial.
            unsent = self.state.without_reports_for(self._update.deployment_id)
            self._transition("update-aborted", replace(unsent, phase=Phase.IDLE, update=None))
            return StepResult.ABORTED

    def _advance_unguarded(self) -> StepResult:
        from fleetcast.agent.download import download
        from fleetcast.agent.inplace import advance_in_place
        from fleetcast.agent.install import is_in_place

        phase, update = self.state.phase, self._update
        if is_in_place(update.offer.manifest.manifest):
            return advance_in_place(self)
        target, previous = update.target_slot, update.previous_slot
        if phase is Phase.DOWNLOADING:
            if self.bootloader.in_trial():
                # Never leave a trial armed for a slot that is being rewritten.
                self.bootloader.rollback()
            return download(self)
        active = self.bootloader.active_slot()
        in_trial = self.bootloader.in_trial()
        if phase is Phase.INSTALLED and active == previous:
            return self._arm()
        if phase is Phase.ROLLING_BACK:
            if active == target:
                self.bootloader.rollback()
                self._event("rollback-armed")
                return StepResult.REBOOT_REQUIRED
            if in_trial:
                self.bootloader.rollback()
            return self._finish_rolled_back(
                f"health checks failed on slot {target}; back on slot {previous}"
            )
        if active == previous:
            if in_trial:
                # Armed, but the reboot has not happened yet.
                if not self._flush_report():
                    self._log("rebooting without having reported it")
                return StepResult.REBOOT_REQUIRED
            return self._finish_rolled_back(
                f"slot {target} did not boot; the bootloader went back to slot {previous}"
            )
        # Running from the new slot.
        if phase is Phase.COMMITTING or not in_trial:
            return self._commit()
        return self._test()

    def _checkpoint(self, point: ResumePoint) -> None:
        update = replace(self._update, resume=point)
        # The progress report's seq is journaled with the checkpoint, before it is sent.
        seq = self.state.report_seq + 1
        self._transition("checkpoint", replace(self.state, update=update, report_seq=seq))
        if self.state.reports:
            return  # an older report goes first; this progress would overtake it
        total = self._update.offer.manifest.manifest.payloads[0].size
        percent = min(99, point.output * 100 // total) if total else 99
        try:
            # Not queued: the next checkpoint's progress supersedes this one anyway.
            self.client.report_status(
                update.deployment_id,
                StatusReport(DeviceUpdateStatus.DOWNLOADING, progress=percent, seq=seq),
            )
        except ServerResponseError as e:
            if e.code == "deployment_aborted":
                raise _DeploymentAbortedError(str(e)) from e
            logger.info("progress report refused: %s", e)
        except TransportError as e:
            # Progress is best effort: the download itself will tell if the
            # server is really gone.
            logger.info("progress report not delivered: %s", e)

    def _progress(self, progress: InstallProgress) -> None:
        self.watchdog.alive(self.config.limits.request_timeout * 2)
        logger.debug("installed %d of %d bytes", progress.written, progress.total)

    def _download_interrupted(self, error: TransportError) -> StepResult:
        """Count a broken download; give up (report failure) after the limit."""
        update = replace(self._update, download_attempts=self._update.download_attempts + 1)
        self._log(f"download interrupted (attempt {update.download_attempts}): {error}")
        if update.download_attempts >= self.config.limits.max_download_attempts:
            return self._fail(f"download failed {update.download_attempts} times: {error}")
        self._transition("download-interrupted", replace(self.state, update=update))
        return StepResult.RETRY

    def _fail(self, message: str) -> StepResult:
        report = self._failure(message, rolled_back=False)
        self._transition(
            "update-failed", replace(self.state, phase=Phase.IDLE, update=None).queued(report)
        )
        self._flush_report()
        return StepResult.FAILED

    def _arm(self) -> StepResult:
        # "installing" must reach the server before arming: an abort
        # answered here still cancels the update.
        if not self._flush_report():
            return StepResult.RETRY
        update = self._update
        self.bootloader.arm_trial(update.target_slot)
        self._log(f"trial boot of slot {update.target_slot} armed")
        report = self._report(DeviceUpdateStatus.REBOOTING)
        self.state = replace(self.state, phase=Phase.ARMED).queued(report)
        self._transition("armed")
        self._flush_report()
        return StepResult.REBOOT_REQUIRED

    def _test(self) -> StepResult:
        update = self._update
        manifest = update.offer.manifest.manifest
        self._log(f"booted slot {update.target_slot} on trial; running health checks")
        self._transition("trial-started", replace(self.state, phase=Phase.TESTING))
        ok, log = self._health(
            check_env(
                slot=update.target_slot,
                slot_path=str(self.config.slots.path(update.target_slot)),
                name=manifest.name,
                version=manifest.version,
            )
        )
        for line in log:
            self._log(line)
        if ok:
            self._transition("health-passed", replace(self.state, phase=Phase.COMMITTING))
            return self._commit()
        self._log(f"rolling back to slot {update.previous_slot}")
        self._transition("health-failed", replace(self.state, phase=Phase.ROLLING_BACK))
        self.bootloader.rollback()
        self._event("rollback-armed")
        return StepResult.REBOOT_REQUIRED

    def _health(self, env: dict[str, str]) -> tuple[bool, tuple[str, ...]]:
        """Run the configured health checks (``[health]``) under their watchdog."""
        health = self.config.health
        self.watchdog.alive(health.watchdog + 30)
        self.watchdog.status("running health checks")

        def reach_server() -> None:
            self.client.authenticate()

        result = run_configured_checks(health, env=env, reach_server=reach_server)
        return result.ok, result.log

    def _commit(self) -> StepResult:
        update = self._update
        manifest = update.offer.manifest.manifest
        self.bootloader.commit()
        self._event("committed")
        image = manifest.payloads[0]
        self.installed.set(
            update.target_slot,
            SlotContent(manifest.name, manifest.version, image.size, image.sha256, update.target),
        )
        self._event("installed-recorded")
        return self._finish_updated(
            f"committed slot {update.target_slot}: {manifest.name} {manifest.version}"
        )

    def _finish_updated(self, message: str) -> StepResult:
        from fleetcast.agent.install import is_in_place

        update = self._update
        if update.target is not None and is_in_place(update.offer.manifest.manifest):
            # Before the journal goes idle: a power cut here commits again, and records again.
            from fleetcast.agent.trust.installed import InPlaceTargets

            InPlaceTargets(self.config.state_dir).set(
                update.offer.manifest.manifest.name, update.target
            )
        self._log(message)
        report = self._report(DeviceUpdateStatus.SUCCESS, progress=100)
        self._transition(
            "update-finished", replace(self.state, phase=Phase.IDLE, update=None).queued(report)
        )
        self._inventory_sent = False
        self._flush_report()
        self._try_inventory()
        return StepResult.UPDATED

    def _finish_rolled_back(self, message: str) -> StepResult:
        self._log(message)
        report = self._failure(message, rolled_back=True)
        self._transition(
            "rolled-back", replace(self.state, phase=Phase.IDLE, update=None).queued(report)
        )
        self._inventory_sent = False
        self._flush_report()
        self._try_inventory()
        return StepResult.ROLLED_BACK


def _check_name_kind(
    name: str, in_place: bool, running: SlotContent | None, in_place_versions: dict[str, str]
) -> None:
    """A name is either the root file system's or an in-place artifact's, never both.

    Raises:
        IncompatibleError: the artifact would mix the two.
    """
    if in_place and running is not None and running.name == name:
        raise IncompatibleError(
            f"artifact {name} has no rootfs-image, but {name} is the root file system's name"
        )
    if not in_place and name in in_place_versions:
        raise IncompatibleError(
            f"artifact {name} is a rootfs-image, but {name} is installed in place (files/script)"
        )


def run_agent(
    config: AgentConfig,
    stop: threading.Event | None = None,
    *,
    client_factory: Callable[[AgentConfig], DeviceApi] | None = None,
    on_transition: TransitionHook | None = None,
) -> StepResult:
    """Supervise the agent across reboots until it is stopped or rejected.

    Each boot gets a fresh :class:`Agent` built from disk. With the simulated
    bootloader a reboot is :func:`simulate_boot` in process; on a real device
    ``reboot.command`` runs and this function waits for the system to go down.

    Args:
        config: the agent configuration.
        stop: set it to stop (the current step finishes first).
        client_factory: builds the device-API client (default: HTTP).
        on_transition: test hook passed to every :class:`Agent`.

    Returns:
        ``STOPPED`` or ``REJECTED``.

    Raises:
        DeviceStateError: the device cannot boot or its state is unusable.
        UsageError: the configuration cannot be used (bad trusted key).
    """
    stop = stop if stop is not None else threading.Event()
    watchdog = SystemdWatchdog()
    watchdog.start()
    try:
        return _supervise(config, stop, client_factory, on_transition, watchdog)
    finally:
        watchdog.stop()


def _supervise(
    config: AgentConfig,
    stop: threading.Event,
    client_factory: Callable[[AgentConfig], DeviceApi] | None,
    on_transition: TransitionHook | None,
    watchdog: SystemdWatchdog,
) -> StepResult:
    while not stop.is_set():
        agent = Agent(
            config,
            client=client_factory(config) if client_factory is not None else None,
            on_transition=on_transition,
            watchdog=watchdog,
        )
        try:
            result = agent.run(stop)
        finally:
            agent.close()
        if result is not StepResult.REBOOT_REQUIRED:
            return result
        if config.bootloader.type == "simulated":
            assert config.bootloader.env_file is not None
            slot = simulate_boot(config.bootloader.env_file)
            logger.info("simulated reboot: running slot %s", slot)
            continue
        logger.info("rebooting: %s", " ".join(config.reboot.command))
        completed = subprocess.run(list(config.reboot.command), check=False)
        if completed.returncode != 0:
            raise DeviceStateError(
                f"reboot command {' '.join(config.reboot.command)} exited {completed.returncode}"
            )
        stop.wait()  # the system is going down; nothing more to do in this process
    return StepResult.STOPPED


__all__ = ["TRANSITIONS", "Agent", "StepResult", "TransitionHook", "run_agent"]
