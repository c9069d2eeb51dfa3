"""The agent's side of a TUF check: version report, child process, offer against target.

:func:`check_with_tuf` is what the runner calls before acting on an offer
(and every ``refresh_interval`` when idle, without an offer):

1. ``POST /tuf/nonce``, then ``POST /tuf/version-report`` with a report
   signed by the device key (:mod:`fleetcast.agent.trust.report`), here in
   the agent's process: the key never leaves it.
2. Run ``python -m fleetcast.agent.trust`` (:func:`run_child`) with a
   :class:`~fleetcast.agent.trust.protocol.TrustRequest` holding a fresh
   bearer token and that nonce; it refreshes both repositories and checks
   the director and image agree (:mod:`fleetcast.agent.trust.verify`).
   Its stdout and stderr go to temporary files read back bounded; it is
   killed after ``timeout`` seconds. A refusal becomes the matching
   exception (``REFUSALS``): the ``InvalidDataError`` family for untrusted
   or disagreeing metadata (the offer is refused, reported, never retried),
   ``TransportError`` for an unreachable repository or a child that timed
   out (retried with backoff), ``DeviceStateError`` for a child that crashed.
3. :func:`check_offer` holds the offer to the verified target: the device
   type is in ``compatible``, the release counter is not lower than the
   installed one, the offer's manifest hashes to ``manifest_sha256``, and the
   offered artifact size and sha256 are the target's.

Only the standard library, ``cryptography`` and Fleetcast's light modules are
imported here: the agent process never loads ``tuf``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tempfile
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.agent.client import TrustApi
from fleetcast.agent.config import AgentConfig
from fleetcast.agent.slots import InstalledTarget
from fleetcast.agent.trust.protocol import MAX_MESSAGE, TrustRequest, TrustVerdict, VerifiedTarget
from fleetcast.agent.trust.report import version_report
from fleetcast.core.wire import UpdateOffer
from fleetcast.exceptions import (
    DeviceStateError,
    DowngradeError,
    IncompatibleError,
    IntegrityError,
    InvalidDataError,
    TransportError,
    UsageError,
    ValidationError,
)
from fleetcast.trust import CUSTOM_KEY, target_path

CHILD_MODULE: Final = "fleetcast.agent.trust"
#: Requests one check makes at most (root chain aside): director timestamp,
#: snapshot, targets; image timestamp, snapshot, targets, one bin; and slack.
_REQUESTS_PER_CHECK: Final = 10
_STDERR_TAIL: Final = 2000


def check_with_tuf(
    config: AgentConfig,
    client: object,
    key: Ed25519PrivateKey,
    *,
    installed: InstalledTarget | None,
    deployment_id: str | None,
) -> VerifiedTarget | None:
    """Report the installed version, then verify what the director directs.

    Args:
        config: the agent configuration (``[trust]`` with both root files).
        client: the device-API client; must implement :class:`TrustApi`.
        key: the device key (signs the version report).
        installed: the TUF target of the running root file system, if known.
        deployment_id: the offer's deployment (``None``: an idle refresh).

    Returns:
        The target both repositories agree on (``None``: an idle refresh and
        the director directs nothing).

    Raises:
        UsageError: TUF is not configured, or the client cannot do TUF.
        SignatureError: metadata TUF does not trust (signatures, threshold,
            expiry, rollback, lengths and hashes of metadata).
        IntegrityError: the repositories disagree on the target.
        IncompatibleError: the director does not direct this device to this deployment.
        TransportError: the server or a repository cannot be reached (retry).
        DeviceStateError: the check itself failed on the device.
    """
    trust = config.trust
    if trust is None or trust.image_root is None or trust.director_root is None:
        raise UsageError("TUF check without [trust] image_root and director_root")
    if not isinstance(client, TrustApi):
        raise UsageError(f"{type(client).__name__} cannot talk to the TUF endpoints")
    nonce = client.tuf_nonce()
    token = client.bearer_token()
    device_id = client.device_id
    if device_id is None:
        raise UsageError("the client has no device id after signing in")
    client.send_version_report(
        version_report(device_id=device_id, nonce=nonce, installed=installed, key=key)
    )
    request = TrustRequest(
        server_url=config.server_url,
        token=token,
        ca_bundle=None if config.ca_bundle is None else str(config.ca_bundle),
        state_dir=str(config.state_dir),
        image_root=str(trust.image_root),
        director_root=str(trust.director_root),
        device_id=device_id,
        nonce=nonce,
        deployment_id=deployment_id,
        timeout=config.limits.request_timeout,
    )
    verdict = run_child(request, timeout=config.limits.request_timeout * _REQUESTS_PER_CHECK)
    if verdict.refusal is not None:
        raise verdict.refusal.error()
    return verdict.target


def run_child(request: TrustRequest, *, timeout: float) -> TrustVerdict:
    """Run the TUF child process on ``request``; return its verdict.

    Raises:
        TransportError: the child did not finish within ``timeout`` seconds (killed).
        DeviceStateError: the child could not start, crashed, or answered garbage.
    """
    payload = json.dumps(request.to_dict()).encode()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            completed = subprocess.run(
                [sys.executable, "-m", CHILD_MODULE],
                input=payload,
                stdout=out,
                stderr=err,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise TransportError(f"TUF check did not finish within {timeout:.0f} s") from e
        except OSError as e:
            raise DeviceStateError(f"cannot start the TUF check ({sys.executable}): {e}") from e
        out.seek(0)
        data = out.read(MAX_MESSAGE + 1)
        err.seek(0, 2)
        err.seek(max(0, err.tell() - _STDERR_TAIL))
        tail = err.read().decode("utf-8", errors="replace").strip()
    if completed.returncode != 0:
        raise DeviceStateError(f"TUF check exited {completed.returncode}: {tail or 'no output'}")
    if len(data) > MAX_MESSAGE:
        raise DeviceStateError(f"TUF check answered more than {MAX_MESSAGE} bytes")
    try:
        return TrustVerdict.from_dict(json.loads(data))
    except (ValueError, RecursionError, InvalidDataError) as e:
        raise DeviceStateError(f"TUF check answered garbage: {e}; {tail}") from e


def _custom(target: VerifiedTarget) -> dict[str, Any]:
    custom = target.custom.get(CUSTOM_KEY)
    if not isinstance(custom, dict):
        raise ValidationError(f"TUF: target {target.path} has no custom.{CUSTOM_KEY}")
    return custom


def check_offer(
    target: VerifiedTarget, offer: UpdateOffer, *, device_type: str, installed_counter: int
) -> InstalledTarget:
    """Hold the offer to the verified image target; return the target to journal.

    Args:
        target: what both repositories agree on.
        offer: the server's offer (its envelope is unsigned; its manifest is
            the vendor's only if it hashes to ``manifest_sha256``).
        device_type: this device's type.
        installed_counter: the release counter of what it runs (0: unknown).

    Raises:
        IntegrityError: the offer is not the target (path, manifest hash,
            artifact size or sha256).
        IncompatibleError: another deployment, or another device type.
        DowngradeError: an older release than the installed one.
        ValidationError: the target's ``custom`` is malformed.
    """
    custom = _custom(target)
    manifest = offer.manifest.manifest
    expected = target_path(manifest.name, manifest.version)
    if target.path != expected:
        raise IntegrityError(f"TUF: the director directs {target.path}, the offer is {expected}")
    if target.deployment_id != offer.deployment_id:
        raise IncompatibleError(
            f"TUF: the director directs deployment {target.deployment_id}, "
            f"the offer is {offer.deployment_id}"
        )
    compatible = custom.get("compatible")
    if not isinstance(compatible, list) or not all(isinstance(c, str) for c in compatible):
        raise ValidationError(f"TUF: target {target.path} has no compatible list")
    if device_type not in compatible:
        raise IncompatibleError(
            f"TUF: {target.path} is released for {', '.join(compatible) or 'no device type'}, "
            f"not for {device_type}"
        )
    counter = custom.get("release_counter")
    if isinstance(counter, bool) or not isinstance(counter, int) or counter < 0:
        raise ValidationError(f"TUF: target {target.path} has no valid release_counter")
    if counter < installed_counter:
        raise DowngradeError(
            f"TUF: {target.path} has release counter {counter}, lower than the "
            f"installed {installed_counter} (rollback refused)"
        )
    manifest_sha256 = hashlib.sha256(offer.manifest.signed_bytes).hexdigest()
    if custom.get("manifest_sha256") != manifest_sha256:
        raise IntegrityError(
            f"TUF: the offered manifest of {target.path} is not the released one "
            f"(sha256 {manifest_sha256})"
        )
    if offer.artifact_size != target.length or offer.artifact_sha256 != target.sha256:
        raise IntegrityError(
            f"TUF: the offered artifact ({offer.artifact_size} bytes, sha256 "
            f"{offer.artifact_sha256}) is not {target.path} ({target.length} bytes, "
            f"sha256 {target.sha256})"
        )
    return InstalledTarget(target.path, target.sha256, counter)


def release_counter(target: InstalledTarget | None) -> int:
    """The release counter of an installed target (0 when unknown)."""
    return 0 if target is None else target.release_counter


__all__ = [
    "CHILD_MODULE",
    "check_offer",
    "check_with_tuf",
    "release_counter",
    "run_child",
]
