"""The director check and the director/image agreement, run in the TUF child process.

:func:`verify` is the whole device-side TUF workflow of ADR 0008 for one
request (:class:`~fleetcast.agent.trust.protocol.TrustRequest`):

1. Refresh the **director** repository (root chain, timestamp, snapshot,
   targets: every check of the TUF client workflow, by python-tuf).
2. Read the trusted director ``targets``: its ``x-fleetcast`` field must name
   this device and the nonce of the version report just accepted (so older
   director metadata, even unexpired and validly signed, cannot be replayed);
   it must hold exactly one target, whose ``custom.fleetcast.deployment_id``
   is the offer's.
3. Refresh the **image** repository and look the director's target path up
   there (through the hash-bin delegations): it must exist, with the same
   length and the same hashes (sha256 required, every algorithm both list
   equal).
4. Answer with the image target (its ``custom`` is signed offline by the
   vendor) plus the director's ``deployment_id`` and ``allow_downgrade``.

The offer-level checks (device type, release counter, manifest hash, offered
size and hash) are the agent's (:mod:`fleetcast.agent.trust.check`): they need
the offer and the installed state, not TUF.

python-tuf's exceptions are translated here into typed refusals; nothing of
``tuf`` crosses the process boundary.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuf.api import exceptions

# tuf.api.metadata re-exports these without __all__; mypy --strict wants the source.
from tuf.api.metadata import Metadata, TargetFile, Targets
from tuf.ngclient.updater import Updater

from fleetcast.agent.trust.fetcher import HttpxFetcher
from fleetcast.agent.trust.protocol import Refusal, TrustRequest, TrustVerdict, VerifiedTarget
from fleetcast.agent.trust.repos import make_updater, metadata_dir, metadata_url, read_root
from fleetcast.exceptions import DeviceStateError, UsageError
from fleetcast.trust import CUSTOM_KEY, DIRECTOR_FIELD, DIRECTOR_REPO, IMAGE_REPO


class RefusedError(Exception):
    """Internal: the child refuses, with a :class:`Refusal` kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def verify(request: TrustRequest) -> TrustVerdict:
    """Refresh both repositories and check they agree on what this device must install.

    Never raises for an expected failure: every one becomes a refusal in the verdict.
    """
    fetcher = HttpxFetcher(
        token=request.token,
        ca_bundle=None if request.ca_bundle is None else Path(request.ca_bundle),
        timeout=request.timeout,
    )
    try:
        return TrustVerdict(target=_verify(request, fetcher))
    except RefusedError as e:
        return TrustVerdict(refusal=Refusal(e.kind, str(e)))
    except exceptions.DownloadLengthMismatchError as e:
        # More bytes than the signed (or maximum) length: endless data.
        return TrustVerdict(
            refusal=Refusal("untrusted", f"metadata longer than its signed length or maximum: {e}")
        )
    except exceptions.DownloadError as e:
        return TrustVerdict(refusal=Refusal("transport", f"repository unreachable: {e}"))
    except exceptions.RepositoryError as e:
        return TrustVerdict(refusal=Refusal("untrusted", f"{type(e).__name__}: {e}"))
    except UsageError as e:
        return TrustVerdict(refusal=Refusal("usage", str(e)))
    except DeviceStateError as e:
        return TrustVerdict(refusal=Refusal("state", str(e)))
    except OSError as e:
        return TrustVerdict(refusal=Refusal("state", f"cannot store TUF metadata: {e}"))
    finally:
        fetcher.close()


def _updater(request: TrustRequest, repo: str, root: str, fetcher: HttpxFetcher) -> Updater:
    return make_updater(
        metadata_dir(Path(request.state_dir), repo),
        metadata_url(request.server_url, repo),
        fetcher,
        bootstrap=read_root(Path(root)),
    )


def _verify(request: TrustRequest, fetcher: HttpxFetcher) -> VerifiedTarget | None:
    director = _updater(request, DIRECTOR_REPO, request.director_root, fetcher)
    director.refresh()
    directed = _directed_target(request, director)
    image = _updater(request, IMAGE_REPO, request.image_root, fetcher)
    image.refresh()
    if directed is None:
        return None  # an idle refresh: nothing directed, both repositories fresh
    target, deployment_id, allow_downgrade = directed
    released = image.get_targetinfo(target.path)
    if released is None:
        raise RefusedError(
            "not-directed",
            f"{target.path} is not in the image repository (not released by the vendor)",
        )
    _check_agreement(target, released)
    return VerifiedTarget(
        path=released.path,
        length=released.length,
        sha256=released.hashes["sha256"],
        custom=dict(released.custom),
        deployment_id=deployment_id,
        allow_downgrade=allow_downgrade,
    )


def _trusted_targets(directory: Path) -> Metadata[Targets]:
    """The director ``targets`` python-tuf just trusted.

    ``Updater`` has no public accessor for it; after ``refresh()`` the file
    it verified (downloaded or cached) is the non-versioned ``targets.json``
    of its metadata directory, which it wrote atomically. Each target read
    from it is cross-checked with ``get_targetinfo`` (the in-memory trusted set).
    """
    return Metadata[Targets].from_bytes((directory / "targets.json").read_bytes())


def _directed_target(
    request: TrustRequest, director: Updater
) -> tuple[TargetFile, str | None, bool] | None:
    targets = _trusted_targets(metadata_dir(Path(request.state_dir), DIRECTOR_REPO)).signed
    extra = targets.unrecognized_fields.get(DIRECTOR_FIELD)
    if not isinstance(extra, dict):
        raise RefusedError("not-directed", f"director targets carry no {DIRECTOR_FIELD!r}")
    if extra.get("device_id") != request.device_id:
        raise RefusedError(
            "not-directed",
            f"director metadata is for device {extra.get('device_id')!r}, "
            f"not {request.device_id!r}",
        )
    if extra.get("nonce") != request.nonce:
        raise RefusedError(
            "not-directed",
            f"director metadata answers nonce {extra.get('nonce')!r}, not the one just "
            f"reported ({request.nonce}): replayed or stale director metadata",
        )
    entries = list(targets.targets.values())
    if request.deployment_id is None and not entries:
        return None
    if len(entries) != 1:
        raise RefusedError(
            "not-directed", f"director metadata must hold exactly one target, holds {len(entries)}"
        )
    target = entries[0]
    if director.get_targetinfo(target.path) != target:
        raise RefusedError("untrusted", f"director target {target.path} is not the trusted one")
    custom = _fleetcast_custom(target)
    deployment_id = custom.get("deployment_id")
    if request.deployment_id is not None and deployment_id != request.deployment_id:
        raise RefusedError(
            "not-directed",
            f"director directs deployment {deployment_id!r}, the offer is "
            f"deployment {request.deployment_id!r}",
        )
    return (
        target,
        deployment_id if isinstance(deployment_id, str) else None,
        custom.get("allow_downgrade") is True,
    )


def _fleetcast_custom(target: TargetFile) -> dict[str, Any]:
    custom = target.custom.get(CUSTOM_KEY)
    if not isinstance(custom, dict):
        raise RefusedError("not-directed", f"target {target.path} has no custom.{CUSTOM_KEY}")
    return custom


def _check_agreement(directed: TargetFile, released: TargetFile) -> None:
    """The director's target and the image repository's are the same file."""
    if directed.length != released.length:
        raise RefusedError(
            "mismatch",
            f"{directed.path}: the director says {directed.length} bytes, "
            f"the image repository {released.length}",
        )
    if "sha256" not in directed.hashes or "sha256" not in released.hashes:
        raise RefusedError("mismatch", f"{directed.path}: a sha256 hash is missing")
    for algorithm in directed.hashes.keys() & released.hashes.keys():
        if directed.hashes[algorithm] != released.hashes[algorithm]:
            raise RefusedError(
                "mismatch",
                f"{directed.path}: the director's {algorithm} differs from the image repository's",
            )


def verdict_json(verdict: TrustVerdict) -> str:
    """The verdict as the one line the child prints."""
    return json.dumps(verdict.to_dict(), separators=(",", ":"))


__all__ = ["RefusedError", "verdict_json", "verify"]
