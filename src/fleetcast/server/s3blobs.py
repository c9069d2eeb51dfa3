"""Artifact files in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, ...), via boto3.

Every server process shares the bucket, so any of them can answer a
download: it checks the device's token and answers with a redirect to a
*presigned* URL that expires after ``presign_expiry`` seconds; the device
then fetches the bytes (``Range`` included) from the object store, and
Python never touches them.

Objects are named ``{prefix}{first two hex digits}/{sha256}``, like the local
store's files. An upload is first spooled to a local file (its sha256 and
size are needed before the object gets its name, and the server verifies
the artifact from that file), then uploaded with boto3's multipart
transfer. boto3 is synchronous; its calls run in a worker thread.
Credentials and region come from the usual ``AWS_*`` environment variables
(or an instance role), the endpoint from ``Settings.s3_endpoint_url``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
import botocore.config  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]

from fleetcast.exceptions import UsageError
from fleetcast.server.blobs import StoredBlob, relative_path
from fleetcast.server.errors import StorageUnavailableError, TooLargeError
from fleetcast.server.settings import Settings

T = TypeVar("T")

# Everything boto3 raises for an unreachable or refusing object store.
_S3_ERRORS = (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError)


def parse_bucket_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket[/prefix]`` into the bucket and a key prefix ending in ``/`` (or "").

    Raises:
        UsageError: not an ``s3://`` URL with a bucket name.
    """
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise UsageError(f"blob store {url!r} is not of the form s3://bucket[/prefix]")
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def _not_found(error: Exception) -> bool:
    if not isinstance(error, botocore.exceptions.ClientError):
        return False
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3BlobStore:
    """Blobs as objects in one bucket; a local spool/cache directory for uploads.

    Args:
        client: a boto3 S3 client.
        bucket: the bucket name (it must exist).
        prefix: prepended to every object key (``""`` or ending in ``/``).
        cache_dir: where uploads are spooled; the verified copy stays there
            as a cache for :meth:`path`.
        presign_expiry: lifetime of a presigned download URL, in seconds.
    """

    def __init__(
        self, client: Any, bucket: str, *, prefix: str, cache_dir: Path, presign_expiry: int
    ) -> None:
        self._s3 = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache_dir = cache_dir
        self.presign_expiry = presign_expiry
        self._tmp = cache_dir / "tmp"

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        """The store ``settings.blob_store`` names (``s3://bucket[/prefix]``).

        Raises:
            UsageError: the URL is malformed.
        """
        bucket, prefix = parse_bucket_url(settings.blob_store)
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=botocore.config.Config(
                signature_version="s3v4",
                # Path-style works with every S3-compatible server and with bucket
                # names that are not valid host names.
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
            ),
        )
        return cls(
            client,
            bucket,
            prefix=prefix,
            cache_dir=settings.data_dir / "blob-cache",
            presign_expiry=settings.presign_expiry,
        )

    def object_key(self, key: str) -> str:
        """The S3 object key of blob ``key`` (ValueError when ``key`` is not a sha256)."""
        return self.prefix + relative_path(key)

    def path(self, key: str) -> Path:
        """The local copy of the blob, present after :meth:`put` in this process."""
        return self.cache_dir / relative_path(key)

    async def _call(self, what: str, fn: Callable[..., T], /, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(fn, **kwargs)
        except _S3_ERRORS as e:
            raise StorageUnavailableError(
                f"object storage: {what} failed: {e}", details={"bucket": self.bucket}
            ) from e

    async def exists(self, key: str) -> bool:
        try:
            await asyncio.to_thread(
                self._s3.head_object, Bucket=self.bucket, Key=self.object_key(key)
            )
        except _S3_ERRORS as e:
            if _not_found(e):
                return False
            raise StorageUnavailableError(
                f"object storage: HEAD {self.object_key(key)} failed: {e}",
                details={"bucket": self.bucket},
            ) from e
        return True

    async def delete(self, key: str) -> None:
        await self._call(
            f"DELETE {self.object_key(key)}",
            self._s3.delete_object,
            Bucket=self.bucket,
            Key=self.object_key(key),
        )
        await asyncio.to_thread(self.path(key).unlink, missing_ok=True)

    def presigned_url(self, key: str, *, filename: str) -> str:
        # Signing is local computation (no request), so it is cheap enough to do inline.
        url: str = self._s3.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": self.object_key(key),
                "ResponseContentType": "application/octet-stream",
                "ResponseContentDisposition": f'attachment; filename="{filename}"',
            },
            ExpiresIn=self.presign_expiry,
        )
        return url

    async def put(self, chunks: AsyncIterable[bytes], *, max_size: int) -> StoredBlob:
        await asyncio.to_thread(self._tmp.mkdir, parents=True, exist_ok=True)
        digest = hashlib.sha256()
        size = 0
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise TooLargeError(
                            f"upload is larger than the limit of {max_size} bytes",
                            details={"max_size": max_size},
                        )
                    digest.update(chunk)
                    await asyncio.to_thread(out.write, chunk)
            key = digest.hexdigest()
            created = not await self.exists(key)
            if created:
                await self._call(
                    f"upload of {self.object_key(key)}",
                    self._s3.upload_file,
                    Filename=str(tmp),
                    Bucket=self.bucket,
                    Key=self.object_key(key),
                )
            final = self.path(key)
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            await asyncio.to_thread(os.replace, tmp, final)
        except BaseException:
            # Synchronous on purpose: cleanup must also run when the upload is cancelled.
            tmp.unlink(missing_ok=True)  # noqa: ASYNC240
            raise
        return StoredBlob(key=key, sha256=key, size=size, created=created)
