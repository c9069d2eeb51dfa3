"""Reading ``mender-artifact`` files (format version 3), as the server stores them.

A Mender artifact is a tar read front to back:

1. ``version``: ``{"format": "mender", "version": 3}``;
2. ``manifest``: ``<sha256>  <path>`` lines for ``version``, the header and
   every payload file (``data/0000/<name>``); optionally ``manifest.sig``
   and ``manifest-augment`` (ignored here: the Mender client, not the
   server, verifies signatures);
3. ``header.tar[.gz|.xz|.zst]``: ``header-info`` (artifact name and group,
   payload types, ``artifact_depends.device_type``), ``headers/0000/type-info``
   and optional ``meta-data``; optionally ``header-augment.tar*``;
4. ``data/0000.tar[.gz|.xz|.zst]``, one per payload, holding its files.

:func:`read_mender_artifact` checks that every member is where it belongs,
every hash in the manifest matches, and every length is bounded, and
returns what the server needs to deploy it. Pure: it reads a file object
and does no other I/O.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Final, cast

import pyzstd

from fleetcast.exceptions import ArtifactFormatError, IntegrityError

MAX_SMALL: Final = 1024 * 1024  # version, manifest, header-info, type-info, meta-data
MAX_HEADER: Final = 16 * 1024 * 1024  # the whole decompressed header tar
_READ: Final = 1024 * 1024


@dataclass(frozen=True)
class MenderArtifactInfo:
    """What the server knows about a Mender artifact after reading it."""

    artifact_name: str
    device_types: tuple[str, ...]
    payload_types: tuple[str, ...]
    artifact_group: str | None = None
    provides: dict[str, str] = field(default_factory=dict)
    depends: dict[str, Any] = field(default_factory=dict)
    signed: bool = False
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact_name": self.artifact_name,
            "artifact_group": self.artifact_group,
            "device_types_compatible": list(self.device_types),
            "payload_types": list(self.payload_types),
            "artifact_provides": dict(self.provides),
            "artifact_depends": dict(self.depends),
            "signed": self.signed,
            "files": list(self.files),
        }


def _decompressor(name: str, raw: IO[bytes]) -> IO[bytes]:
    if name.endswith(".gz"):
        return cast("IO[bytes]", gzip.GzipFile(fileobj=raw, mode="rb"))
    if name.endswith(".xz"):
        return cast("IO[bytes]", lzma.LZMAFile(raw, mode="rb"))
    if name.endswith(".zst"):
        return cast("IO[bytes]", pyzstd.ZstdFile(cast("BinaryIO", raw), mode="rb"))
    if name.endswith(".tar"):
        return raw
    raise ArtifactFormatError(f"unknown compression of {name!r}")


def _read_small(stream: IO[bytes], what: str, limit: int = MAX_SMALL) -> bytes:
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise ArtifactFormatError(f"{what} is larger than {limit} bytes")
    return data


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactFormatError(f"{what} is not JSON: {e}") from e
    if not isinstance(value, dict):
        raise ArtifactFormatError(f"{what} is not a JSON object")
    return value


def _members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, IO[bytes]]]:
    for member in tar:
        if member.isdir():
            continue
        if not member.isfile():
            raise ArtifactFormatError(f"{member.name!r} is not a regular file")
        stream = tar.extractfile(member)
        assert stream is not None
        yield member, stream


def _hash(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := stream.read(_READ):
        digest.update(chunk)
    return digest.hexdigest()


def _parse_manifest(data: bytes) -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in data.decode(errors="replace").splitlines():
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise ArtifactFormatError(f"malformed manifest line {line!r}")
        entries[parts[1]] = parts[0].lower()
    return entries


def _check(manifest: dict[str, str], path: str, digest: str) -> None:
    expected = manifest.get(path)
    if expected is None:
        raise IntegrityError(f"{path} is not listed in the manifest")
    if expected != digest:
        raise IntegrityError(f"{path}: sha256 {digest} differs from the manifest's {expected}")


def _read_header(stream: IO[bytes]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    bounded = io.BytesIO(_read_small(stream, "the header", MAX_HEADER))
    info: dict[str, Any] | None = None
    type_infos: dict[int, dict[str, Any]] = {}
    with tarfile.open(fileobj=bounded, mode="r|") as tar:
        for member, content in _members(tar):
            data = _read_small(content, member.name)
            if member.name == "header-info":
                info = _json(data, "header-info")
            elif member.name.startswith("headers/") and member.name.endswith("/type-info"):
                index = member.name.split("/")[1]
                if not index.isdigit():
                    raise ArtifactFormatError(f"unexpected header member {member.name!r}")
                type_infos[int(index)] = _json(data, member.name)
    if info is None:
        raise ArtifactFormatError("the header has no header-info")
    return info, [type_infos[i] for i in sorted(type_infos)]


def read_mender_artifact(fh: IO[bytes]) -> MenderArtifactInfo:
    """Read and check a whole Mender artifact (format version 3).

    Raises:
        ArtifactFormatError: not a Mender artifact, another format version,
            members missing, misplaced or unbounded.
        IntegrityError: a hash differs from the manifest, or a file is not in it.
    """
    manifest: dict[str, str] | None = None
    header: tuple[dict[str, Any], list[dict[str, Any]]] | None = None
    signed = False
    files: list[str] = []
    seen_version = False
    try:
        with tarfile.open(fileobj=fh, mode="r|") as outer:
            for member, stream in _members(outer):
                name = member.name
                if not seen_version:
                    if name != "version":
                        raise ArtifactFormatError("not a Mender artifact (no leading 'version')")
                    data = _read_small(stream, "version")
                    version = _json(data, "version")
                    if version.get("format") != "mender" or version.get("version") != 3:
                        raise ArtifactFormatError(
                            f"unsupported Mender artifact format {version!r} (version 3 is)"
                        )
                    seen_version = True
                    version_digest = hashlib.sha256(data).hexdigest()
                elif name == "manifest":
                    manifest = _parse_manifest(_read_small(stream, "manifest"))
                    _check(manifest, "version", version_digest)
                elif name in ("manifest.sig", "manifest-augment"):
                    signed = signed or name == "manifest.sig"
                    _read_small(stream, name)
                elif name.startswith("header.tar"):
                    if manifest is None:
                        raise ArtifactFormatError("header before manifest")
                    raw = io.BytesIO(_read_small(stream, name, MAX_HEADER))
                    _check(manifest, name, hashlib.sha256(raw.getvalue()).hexdigest())
                    header = _read_header(_decompressor(name, raw))
                elif name.startswith("header-augment.tar"):
                    _read_small(stream, name, MAX_HEADER)
                elif name.startswith("data/"):
                    if manifest is None or header is None:
                        raise ArtifactFormatError(f"{name} before manifest and header")
                    index = name[len("data/") :].split(".")[0]
                    with tarfile.open(fileobj=_decompressor(name, stream), mode="r|") as inner:
                        for item, content in _members(inner):
                            path = f"data/{index}/{item.name}"
                            _check(manifest, path, _hash(content))
                            files.append(path)
                else:
                    raise ArtifactFormatError(f"unexpected member {name!r}")
    except (tarfile.TarError, EOFError, OSError, lzma.LZMAError, pyzstd.ZstdError) as e:
        raise ArtifactFormatError(f"not a readable Mender artifact: {e}") from e
    if header is None or manifest is None:
        raise ArtifactFormatError("a Mender artifact needs a manifest and a header")
    missing = sorted(p for p in manifest if p.startswith("data/") and p not in files)
    if missing:
        raise IntegrityError(f"payload files listed in the manifest are missing: {missing}")
    return _info(header, signed, files)


def _info(
    header: tuple[dict[str, Any], list[dict[str, Any]]], signed: bool, files: list[str]
) -> MenderArtifactInfo:
    info, type_infos = header
    provides = info.get("artifact_provides") or {}
    depends = info.get("artifact_depends") or {}
    name = provides.get("artifact_name") if isinstance(provides, dict) else None
    device_types = depends.get("device_type") if isinstance(depends, dict) else None
    if not isinstance(name, str) or not name:
        raise ArtifactFormatError("header-info has no artifact_provides.artifact_name")
    if not isinstance(device_types, list) or not all(isinstance(t, str) for t in device_types):
        raise ArtifactFormatError("header-info has no artifact_depends.device_type list")
    payloads = info.get("payloads") or []
    types = tuple(
        str(p.get("type")) for p in payloads if isinstance(p, dict) and p.get("type")
    ) or tuple(str(t.get("type")) for t in type_infos if t.get("type"))
    group = provides.get("artifact_group")
    return MenderArtifactInfo(
        artifact_name=name,
        device_types=tuple(device_types),
        payload_types=types,
        artifact_group=group if isinstance(group, str) else None,
        provides={str(k): str(v) for k, v in provides.items()},
        depends={str(k): v for k, v in depends.items()},
        signed=signed,
        files=tuple(files),
    )
