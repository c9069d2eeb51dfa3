"""Serving artifact files to DDI and Mender clients: ranged, or redirected to the blob store."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import FileResponse, RedirectResponse

from fleetcast.server.db.models import Artifact
from fleetcast.server.errors import NotFoundError
from fleetcast.server.runtime import ServerState


async def blob_response(state: ServerState, artifact: Artifact, filename: str) -> Response:
    """The artifact's bytes (ranged), or a redirect to the blob store's own URL.

    Raises:
        NotFoundError: the file is missing from the blob store.
    """
    presigned = state.blobs.presigned_url(artifact.blob_key, filename=filename)
    if presigned is not None:
        return RedirectResponse(presigned, status_code=302)
    if not await state.blobs.exists(artifact.blob_key):
        raise NotFoundError(f"the file of artifact {artifact.id} is missing from the blob store")
    return FileResponse(
        state.blobs.path(artifact.blob_key),
        media_type="application/octet-stream",
        filename=filename,
        # Content-addressed: the sha256 is a strong validator for If-Range.
        headers={"ETag": f'"{artifact.sha256}"'},
    )
