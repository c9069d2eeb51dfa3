"""The artifact manifest: what an artifact holds and which devices it fits.

A manifest is signed over its canonical JSON (``fleetcast.core.canonical``).
Fields this version does not know are kept in ``unrecognized_fields`` and
written back unchanged, so an older tool round-trips a newer manifest without
breaking its signature.

Compatibility rules applied by every device before it touches a slot:

1. the device type must be in ``compatible``;
2. the installed version must satisfy ``depends["version"]`` when present;
3. the new version must not be older than the installed one, unless the
   deployment explicitly allows downgrades (same version counts as "already
   installed", not as an update).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetcast.core.canonical import canonical_json
from fleetcast.core.envelope import PayloadEncryption, WrappedKey, chunk_count
from fleetcast.core.signing import Signature, sign, verify
from fleetcast.core.versions import Version, VersionRange
from fleetcast.exceptions import DowngradeError, IncompatibleError, ValidationError

FORMAT_VERSION: Final = 1
PAYLOAD_TYPES: Final = ("rootfs-image", "files", "script", "module")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
# A handler is a file name in the device's modules directory: no path separators.
_HANDLER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _require(data: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValidationError(f"{what}: field {key!r} must be {kind.__name__}")
    return value


def _check_name(value: str, what: str) -> str:
    if not _NAME.match(value):
        raise ValidationError(
            f"{what}: {value!r} is not a valid name (letters, digits, '._+-', max 128)"
        )
    return value


@dataclass(frozen=True)
class Payload:
    """One payload: a zstd-compressed member of the artifact.

    ``size``/``sha256`` describe the uncompressed bytes (what lands on the
    device); ``compressed_size``/``compressed_sha256`` the member in the file,
    which bounds every download.

    A ``module`` payload is installed by the device's update-module handler
    named by ``meta["handler"]`` (a plain file name, checked here so that a
    manifest can never name a path).

    An encrypted payload (``encryption`` set, ADR 0008) keeps ``size``/``sha256``
    for the plaintext content; ``compressed_size``/``compressed_sha256`` then
    describe the stored, encrypted member, whose size must be a valid chunk
    layout (:func:`fleetcast.core.envelope.chunk_count`).
    """

    name: str
    type: str
    size: int
    sha256: str
    compressed_size: int
    compressed_sha256: str
    meta: dict[str, str] = field(default_factory=dict)
    encryption: PayloadEncryption | None = None

    _FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "name",
            "type",
            "size",
            "sha256",
            "compressed_size",
            "compressed_sha256",
            "meta",
            "encryption",
        }
    )

    def __post_init__(self) -> None:
        what = f"payload {self.name!r}"
        _check_name(self.name, what)
        if self.type not in PAYLOAD_TYPES:
            raise ValidationError(f"{what}: type {self.type!r} is not one of {PAYLOAD_TYPES}")
        for size_field in ("size", "compressed_size"):
            value = getattr(self, size_field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValidationError(f"{what}: {size_field} must be a non-negative integer")
        for hash_field in ("sha256", "compressed_sha256"):
            if not _SHA256.match(getattr(self, hash_field)):
                raise ValidationError(f"{what}: {hash_field} must be 64 lowercase hex digits")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.meta.items()):
            raise ValidationError(f"{what}: meta must map strings to strings")
        if self.type == "module" and not _HANDLER.match(self.meta.get("handler", "")):
            raise ValidationError(
                f"{what}: a module payload needs meta 'handler', a file name of lowercase "
                "letters, digits and '._-' (max 64)"
            )
        if self.encryption is not None:
            try:
                chunk_count(self.compressed_size, self.encryption.chunk_size)
            except ValidationError as e:
                raise ValidationError(f"{what}: compressed_size: {e}") from e

    @classmethod
    def from_dict(cls, data: object) -> Payload:
        """Raises: ValidationError: a field is missing or invalid."""
        if not isinstance(data, dict):
            raise ValidationError("payload must be an object")
        meta = data.get("meta", {})
        if not isinstance(meta, dict):
            raise ValidationError("payload: field 'meta' must be an object")
        encryption = data.get("encryption")
        return cls(
            name=_require(data, "name", str, "payload"),
            type=_require(data, "type", str, "payload"),
            size=_require(data, "size", int, "payload"),
            sha256=_require(data, "sha256", str, "payload"),
            compressed_size=_require(data, "compressed_size", int, "payload"),
            compressed_sha256=_require(data, "compressed_sha256", str, "payload"),
            meta=dict(meta),
            encryption=None if encryption is None else PayloadEncryption.from_dict(encryption),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "size": self.size,
            "sha256": self.sha256,
            "compressed_size": self.compressed_size,
            "compressed_sha256": self.compressed_sha256,
            "meta": dict(self.meta),
        }
        # Only when set: a manifest without encryption keeps its exact old form.
        if self.encryption is not None:
            data["encryption"] = self.encryption.to_dict()
        return data


@dataclass(frozen=True)
class Manifest:
    """What an artifact is (name, version), which devices it fits and its payloads."""

    name: str
    version: str
    compatible: tuple[str, ...]
    payloads: tuple[Payload, ...]
    depends: dict[str, str] = field(default_factory=dict)
    provides: dict[str, str] = field(default_factory=dict)
    description: str = ""
    format: int = FORMAT_VERSION
    # The content key wrapped for device groups (ADR 0008); None: field absent.
    wrapped_keys: tuple[WrappedKey, ...] | None = None
    unrecognized_fields: dict[str, Any] = field(default_factory=dict)

    _FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "format",
            "name",
            "version",
            "compatible",
            "payloads",
            "depends",
            "provides",
            "description",
            "wrapped_keys",
        }
    )

    def __post_init__(self) -> None:
        what = f"manifest {self.name!r}"
        _check_name(self.name, "manifest")
        Version.parse(self.version)
        if self.format != FORMAT_VERSION:
            raise ValidationError(f"{what}: unsupported format {self.format}")
        if not self.compatible:
            raise ValidationError(f"{what}: 'compatible' must list at least one device type")
        for device_type in self.compatible:
            _check_name(device_type, f"{what} compatible")
        if not self.payloads:
            raise ValidationError(f"{what}: needs at least one payload")
        names = [p.name for p in self.payloads]
        if len(set(names)) != len(names):
            raise ValidationError(f"{what}: payload names must be unique")
        images = [p for p in self.payloads if p.type == "rootfs-image"]
        if images and len(self.payloads) != 1:
            raise ValidationError(f"{what}: a rootfs-image must be the artifact's only payload")
        for mapping_name in ("depends", "provides"):
            mapping = getattr(self, mapping_name)
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
                raise ValidationError(f"{what}: {mapping_name} must map strings to strings")
        if "version" in self.depends:
            VersionRange.parse(self.depends["version"])
        key_ids = {p.encryption.key_id for p in self.payloads if p.encryption is not None}
        if len(key_ids) > 1:
            raise ValidationError(f"{what}: encrypted payloads must share one content key")
        if self.wrapped_keys is not None:
            if not key_ids:
                raise ValidationError(f"{what}: wrapped_keys without an encrypted payload")
            recipients = [w.recipient for w in self.wrapped_keys]
            if len(set(recipients)) != len(recipients):
                raise ValidationError(f"{what}: wrapped_keys name a recipient twice")

    @property
    def content_key_id(self) -> str | None:
        """The key id of the artifact's content key, or None when nothing is encrypted."""
        for payload in self.payloads:
            if payload.encryption is not None:
                return payload.encryption.key_id
        return None

    @property
    def encrypted(self) -> bool:
        return self.content_key_id is not None

    @property
    def semver(self) -> Version:
        return Version.parse(self.version)

    @property
    def payload_type(self) -> str:
        """The artifact's kind: ``rootfs-image`` if it carries one, else its first payload's."""
        return self.payloads[0].type

    @property
    def total_size(self) -> int:
        return sum(p.size for p in self.payloads)

    @classmethod
    def from_dict(cls, data: object) -> Manifest:
        """Build a manifest from parsed JSON, keeping unknown fields.

        Raises:
            ValidationError: a field is missing or invalid.
        """
        if not isinstance(data, dict):
            raise ValidationError("manifest must be a JSON object")
        payloads = data.get("payloads")
        if not isinstance(payloads, list):
            raise ValidationError("manifest: field 'payloads' must be a list")
        compatible = data.get("compatible")
        if not isinstance(compatible, list) or not all(isinstance(c, str) for c in compatible):
            raise ValidationError("manifest: field 'compatible' must be a list of strings")
        depends, provides = data.get("depends", {}), data.get("provides", {})
        if not isinstance(depends, dict) or not isinstance(provides, dict):
            raise ValidationError("manifest: 'depends' and 'provides' must be objects")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise ValidationError("manifest: field 'description' must be a string")
        wrapped = data.get("wrapped_keys")
        if wrapped is not None and not isinstance(wrapped, list):
            raise ValidationError("manifest: field 'wrapped_keys' must be a list")
        return cls(
            name=_require(data, "name", str, "manifest"),
            version=_require(data, "version", str, "manifest"),
            compatible=tuple(compatible),
            payloads=tuple(Payload.from_dict(p) for p in payloads),
            depends=dict(depends),
            provides=dict(provides),
            description=description,
            format=_require(data, "format", int, "manifest"),
            wrapped_keys=None
            if wrapped is None
            else tuple(WrappedKey.from_dict(w) for w in wrapped),
            unrecognized_fields={k: v for k, v in data.items() if k not in cls._FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        data = {
            **self.unrecognized_fields,
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "compatible": list(self.compatible),
            "payloads": [p.to_dict() for p in self.payloads],
            "depends": dict(self.depends),
            "provides": dict(self.provides),
            "description": self.description,
        }
        if self.wrapped_keys is not None:
            data["wrapped_keys"] = [w.to_dict() for w in self.wrapped_keys]
        return data

    def canonical_bytes(self) -> bytes:
        """The bytes that are signed."""
        return canonical_json(self.to_dict())

    def check_compatible(
        self, *, device_type: str, installed_version: str | None, allow_downgrade: bool = False
    ) -> None:
        """Raise unless this artifact may be installed on the described device.

        Raises:
            IncompatibleError: wrong device type, or ``depends`` not met.
            DowngradeError: older than the installed version, downgrades not allowed.
        """
        if device_type not in self.compatible:
            raise IncompatibleError(
                f"artifact {self.name} {self.version} is for device types "
                f"{', '.join(self.compatible)}, not {device_type!r}"
            )
        installed = Version.parse(installed_version) if installed_version else None
        wanted = self.depends.get("version")
        if wanted is not None and (
            installed is None or not VersionRange.parse(wanted).contains(installed)
        ):
            raise IncompatibleError(
                f"artifact {self.name} {self.version} needs installed version {wanted}, "
                f"device has {installed_version or 'none'}"
            )
        if installed is not None and self.semver < installed and not allow_downgrade:
            raise DowngradeError(
                f"artifact {self.name} {self.version} is older than installed "
                f"{installed_version}; the deployment does not allow downgrades"
            )


@dataclass(frozen=True)
class SignedManifest:
    """A manifest with its signatures, as stored in an artifact and sent to devices."""

    manifest: Manifest
    signatures: tuple[Signature, ...]
    # Exactly the bytes the signatures cover: the canonical form of the
    # "signed" object as received, not as re-serialised by this version.
    signed_bytes: bytes

    @classmethod
    def create(cls, manifest: Manifest, private_key: Ed25519PrivateKey) -> SignedManifest:
        """Sign ``manifest`` with ``private_key``."""
        signed_bytes = manifest.canonical_bytes()
        return cls(manifest, (sign(private_key, signed_bytes),), signed_bytes)

    def verify(self, trusted_keys: list[Ed25519PublicKey]) -> str:
        """Check the signatures against ``trusted_keys``; return the verifying key id.

        Raises:
            SignatureError: unsigned, untrusted key, or invalid signature.
        """
        what = f"artifact {self.manifest.name} {self.manifest.version}"
        return verify(self.signed_bytes, list(self.signatures), trusted_keys, what=what)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signed": json.loads(self.signed_bytes),
            "signatures": [s.to_dict() for s in self.signatures],
        }

    @classmethod
    def from_dict(cls, data: object) -> SignedManifest:
        """Raises: ValidationError: not a ``{"signed", "signatures"}`` envelope."""
        if not isinstance(data, dict) or "signed" not in data:
            raise ValidationError("signed manifest must be an object with 'signed'")
        signatures = data.get("signatures", [])
        if not isinstance(signatures, list):
            raise ValidationError("'signatures' must be a list")
        return cls(
            manifest=Manifest.from_dict(data["signed"]),
            signatures=tuple(Signature.from_dict(s) for s in signatures),
            signed_bytes=canonical_json(data["signed"]),
        )
