"""Whether an artifact is released: its target in the image repository (ADR 0008).

An artifact ``name`` ``version`` is released when the bin responsible for
``<name>/<version>.fca`` (python-tuf ``SuccinctRoles.get_role_for_target``)
lists that path with the artifact file's length and sha256. The director
points devices only at released artifacts, and once an image root exists a
deployment of an unreleased one is refused.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession
from tuf.api.metadata import TargetFile, Targets

from fleetcast.server.db.models import Artifact
from fleetcast.server.errors import ArtifactNotReleasedError, TufMetadataInvalidError
from fleetcast.server.trust import store
from fleetcast.server.trust.verify import succinct_roles
from fleetcast.trust import IMAGE_REPO, target_path


async def image_repository_set_up(session: AsyncSession) -> bool:
    """Whether an image root was uploaded."""
    return await store.latest(session, IMAGE_REPO, "root") is not None


async def image_target(session: AsyncSession, name: str, version: str) -> TargetFile | None:
    """The image target of artifact ``name`` ``version`` as its bin lists it now, or None."""
    targets_row = await store.latest(session, IMAGE_REPO, "targets")
    if targets_row is None:
        return None
    targets = store.parse(targets_row.data, "stored image targets").signed
    assert isinstance(targets, Targets)
    path = target_path(name, version)
    try:
        role = succinct_roles(targets).get_role_for_target(path)
    except TufMetadataInvalidError:
        return None
    bin_md = await store.latest_metadata(session, IMAGE_REPO, role)
    if bin_md is None:
        return None
    assert isinstance(bin_md.signed, Targets)
    return bin_md.signed.targets.get(path)


async def released_target(session: AsyncSession, artifact: Artifact) -> TargetFile | None:
    """The image target of ``artifact`` if it describes this very file (length, sha256)."""
    target = await image_target(session, artifact.name, artifact.version)
    if target is None:
        return None
    if target.length != artifact.size or target.hashes.get("sha256") != artifact.sha256:
        return None
    return target


async def require_released(session: AsyncSession, artifact: Artifact) -> None:
    """Refuse an artifact without an image target once the image repository is set up.

    Only Fleetcast artifacts are released through TUF; other formats (files for
    hawkBit DDI clients, Mender artifacts) are not checked.

    Raises:
        ArtifactNotReleasedError: no matching target in the image repository.
    """
    if artifact.format != "fleetcast" or not await image_repository_set_up(session):
        return
    if await released_target(session, artifact) is None:
        path = target_path(artifact.name, artifact.version)
        raise ArtifactNotReleasedError(
            f"artifact {artifact.name} {artifact.version} is not released: the image "
            f"repository has no target {path} with its length and sha256 "
            f"(run `fleetcast artifact release`)",
            details={"artifact_id": artifact.id, "target": path},
        )


__all__ = ["image_repository_set_up", "image_target", "released_target", "require_released"]
