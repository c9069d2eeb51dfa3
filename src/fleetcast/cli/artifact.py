"""``fleetcast artifact``: build, inspect, verify, upload and list artifacts."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from tuf.api.metadata import Targets

from fleetcast.artifact import (
    ArtifactReader,
    PayloadSource,
    build_artifact,
    decode_payload,
    read_manifest,
    verify_artifact,
)
from fleetcast.cli._api import ManagementClient
from fleetcast.cli._context import state
from fleetcast.cli.encryption import (
    encryption_options,
    key_file_for,
    read_content_key,
    upload_with_content_key,
    write_content_key,
)
from fleetcast.cli.tuf import put_metadata, remote_metadata
from fleetcast.core.manifest import PAYLOAD_TYPES, SignedManifest
from fleetcast.core.signing import private_key_from_pem, public_key_from_pem
from fleetcast.exceptions import UsageError
from fleetcast.trust import CUSTOM_KEY, IMAGE_REPO, target_path
from fleetcast.trust.metadir import MetadataDir, parse_metadata, to_bytes
from fleetcast.trust.offline import bin_for, expiry, target_entry
from fleetcast.trust.operations import release as trust_release

app = typer.Typer(help="Build, inspect, verify, upload and list artifacts.", no_args_is_help=True)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read {what} {path}: {e.strerror}") from e


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Raises: UsageError / ValidationError: missing or not an ed25519 private key."""
    return private_key_from_pem(_read(path, "key file"))


def load_public_keys(paths: list[Path]) -> list[Ed25519PublicKey]:
    """Raises: UsageError / ValidationError: missing or not an ed25519 public key."""
    return [public_key_from_pem(_read(p, "public key")) for p in paths]


def _pairs(values: list[str], option: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} expects KEY=VALUE, got {value!r}")
        result[key] = val
    return result


def _manifest_summary(signed: SignedManifest) -> dict[str, Any]:
    return signed.to_dict()


@app.command("build")
def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="Artifact name, e.g. acme-fw.")],
    version: Annotated[str, typer.Option(help="Semantic version, e.g. 1.2.0.")],
    device_type: Annotated[
        list[str], typer.Option("--device-type", "-t", help="Compatible device type (repeat).")
    ],
    file: Annotated[
        list[Path], typer.Option("--file", "-f", help="Payload file (repeat for a file set).")
    ],
    key: Annotated[
        Path, typer.Option(help="Private signing key (from `fleetcast keys generate`).")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Artifact file to write.")],
    payload_type: Annotated[
        str, typer.Option("--type", help=f"Payload type: {', '.join(PAYLOAD_TYPES)}.")
    ] = "rootfs-image",
    meta: Annotated[
        list[str], typer.Option(help="Payload metadata KEY=VALUE, e.g. dest=/etc/app (repeat).")
    ] = [],  # noqa: B006
    depends: Annotated[
        str | None, typer.Option(help="Required installed version range, e.g. '>=1.0.0,<2.0.0'.")
    ] = None,
    provides: Annotated[list[str], typer.Option(help="Provided KEY=VALUE (repeat).")] = [],  # noqa: B006
    description: Annotated[str, typer.Option(help="Free text shown to operators.")] = "",
    level: Annotated[int, typer.Option(help="zstd compression level (1-22).")] = 3,
    encrypt_to: Annotated[
        list[Path],
        typer.Option(
            "--encrypt-to",
            help="Encrypt the payloads for a device group: its X25519 public key "
            "(`keys generate --kind x25519`; repeat).",
        ),
    ] = [],  # noqa: B006
    encrypt_for_devices: Annotated[
        bool,
        typer.Option(
            "--encrypt-for-devices",
            help="Encrypt the payloads per device: writes the content key to OUTPUT.key "
            "for `artifact upload --content-key`.",
        ),
    ] = False,
    chunk_size: Annotated[
        int | None,
        typer.Option(help="With encryption: plaintext bytes per encrypted chunk (max 1 MiB)."),
    ] = None,
) -> None:
    """Build and sign an artifact from payload files (optionally with encrypted payloads)."""
    if payload_type not in PAYLOAD_TYPES:
        raise UsageError(f"--type must be one of {', '.join(PAYLOAD_TYPES)}")
    encryption = encryption_options(encrypt_to, encrypt_for_devices, output, chunk_size)
    payloads = [
        PayloadSource(f.name.replace(" ", "_")[:128], payload_type, f, _pairs(meta, "--meta"))
        for f in file
    ]
    signed = build_artifact(
        output,
        name=name,
        version=version,
        compatible=device_type,
        payloads=payloads,
        key=load_private_key(key),
        depends={"version": depends} if depends else None,
        provides=_pairs(provides, "--provides"),
        description=description,
        level=level,
        encryption=encryption,
    )
    if encryption is not None and encrypt_for_devices:
        write_content_key(key_file_for(output), encryption, signed.manifest)
    out = state(ctx).output
    if out.as_json:
        out.data(
            {
                "path": str(output),
                "size": output.stat().st_size,
                "manifest": _manifest_summary(signed),
            }
        )
    else:
        m = signed.manifest
        out.message(
            f"built {output} ({output.stat().st_size} bytes): "
            f"{m.name} {m.version} for {', '.join(m.compatible)}"
        )


@app.command("inspect")
def inspect(
    ctx: typer.Context, path: Annotated[Path, typer.Argument(help="Artifact file.")]
) -> None:
    """Show an artifact's manifest (without verifying it)."""
    if not path.is_file():
        raise UsageError(f"no such artifact file: {path}")
    signed = read_manifest(path)
    out = state(ctx).output
    if out.as_json:
        out.data(_manifest_summary(signed))
        return
    m = signed.manifest
    out.fields(
        f"{path.name}",
        [
            ("name", m.name),
            ("version", m.version),
            ("compatible", ", ".join(m.compatible)),
            ("depends", ", ".join(f"{k} {v}" for k, v in m.depends.items()) or "-"),
            ("provides", ", ".join(f"{k}={v}" for k, v in m.provides.items()) or "-"),
            ("signed by", ", ".join(s.keyid[:16] for s in signed.signatures) or "UNSIGNED"),
        ],
    )
    out.table(
        "payloads",
        ["name", "type", "size", "compressed", "sha256"],
        [(p.name, p.type, p.size, p.compressed_size, p.sha256[:16]) for p in m.payloads],
    )


@app.command("verify")
def verify(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Artifact file.")],
    key: Annotated[list[Path], typer.Option("--key", "-k", help="Trusted public key (repeat).")],
    content_key: Annotated[
        Path | None,
        typer.Option(help="Encrypted payloads: the content key file, to verify the plaintext too."),
    ] = None,
) -> None:
    """Verify the signature and every payload hash; exit non-zero if anything is wrong.

    Encrypted payloads without --content-key: only their stored (encrypted) bytes.
    """
    if not path.is_file():
        raise UsageError(f"no such artifact file: {path}")
    decrypt = (
        None if content_key is None else read_content_key(content_key, read_manifest(path).manifest)
    )
    verified = verify_artifact(path, load_public_keys(key), content_key=decrypt)
    out = state(ctx).output
    result = {
        "ok": True,
        "keyid": verified.keyid,
        "sha256": verified.sha256,
        "size": verified.size,
        "content_verified": verified.content_verified,
    }
    if out.as_json:
        out.data(result)
    else:
        m = verified.signed.manifest
        what = (
            "all payload hashes match"
            if verified.content_verified
            else "encrypted payloads checked as stored (no --content-key: content not decrypted)"
        )
        out.message(f"OK: {m.name} {m.version} signed by {verified.keyid[:16]}, {what}")


@app.command("upload")
def upload(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Artifact file.")],
    name: Annotated[
        str | None,
        typer.Option(
            help="Upload an opaque file for hawkBit-DDI clients (.swu, .raucb) by this name."
        ),
    ] = None,
    version: Annotated[str | None, typer.Option(help="With --name: its version.")] = None,
    device_type: Annotated[
        list[str],
        typer.Option("--device-type", "-t", help="With --name: a compatible device type (repeat)."),
    ] = [],  # noqa: B006
    filename: Annotated[
        str | None, typer.Option(help="With --name: the file name clients see (default: PATH's).")
    ] = None,
    content_key: Annotated[
        Path | None,
        typer.Option(
            help="An artifact built with --encrypt-for-devices: its content key file "
            "(FILE.key), kept by the server only encrypted."
        ),
    ] = None,
) -> None:
    """Upload an artifact to the server: a Fleetcast (.fca) or Mender artifact, or with
    --name an opaque file for SWUpdate/RAUC devices (see docs/migrate.md)."""
    if not path.is_file():
        raise UsageError(f"no such artifact file: {path}")
    key = None
    if content_key is not None:
        if name is not None:
            raise UsageError("--content-key goes with a Fleetcast artifact, not --name")
        key = read_content_key(content_key, read_manifest(path).manifest)
    params = None
    if name is not None:
        if not version or not device_type:
            raise UsageError("--name needs --version and at least one --device-type")
        params = {
            "format": "file",
            "name": name,
            "version": version,
            "compatible": device_type,
            "filename": filename or path.name,
        }
    elif version or device_type or filename:
        raise UsageError("--version, --device-type and --filename go with --name")
    st = state(ctx)
    with st.client() as client:
        if key is not None:
            artifact = upload_with_content_key(client, path, key)
        else:
            artifact = client.upload_artifact(path, params)
    if st.output.as_json:
        st.output.data(artifact)
    else:
        st.output.message(f"uploaded {artifact['name']} {artifact['version']} as {artifact['id']}")


@app.command("list")
def list_(ctx: typer.Context) -> None:
    """List the artifacts on the server."""
    st = state(ctx)
    with st.client() as client:
        items = client.get("/artifacts")["items"]
    if st.output.as_json:
        st.output.data(items)
        return
    st.output.table(
        "artifacts",
        ["id", "name", "version", "device types", "type", "size"],
        [
            (
                a["id"],
                a["name"],
                a["version"],
                ", ".join(a["compatible"]),
                a["payload_type"],
                a["size"],
            )
            for a in items
        ],
    )


class _NullSink:
    def write(self, data: bytes) -> int:
        return len(data)


def _check_artifact(path: Path, vendor_keys: list[Path]) -> tuple[SignedManifest, str, int]:
    """Check ``path`` before vouching for it: the manifest, every payload hash and,
    with vendor keys, the signature. Returns the manifest, file sha256 and size.

    Raises:
        InvalidDataError: malformed, tampered or (with keys) not signed by them.
    """
    if vendor_keys:
        verified = verify_artifact(path, load_public_keys(vendor_keys))
        return verified.signed, verified.sha256, verified.size
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1024 * 1024):
            digest.update(block)
    with path.open("rb") as fh:
        reader = ArtifactReader(fh)
        signed = reader.read_manifest()
        for entry, stream in reader.payloads():
            decode_payload(entry, stream, _NullSink())  # type: ignore[arg-type]
    return signed, digest.hexdigest(), path.stat().st_size


@app.command("release")
def release(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="Artifact file (already uploaded).")],
    keys: Annotated[Path, typer.Option("--keys", help="Key directory (from `keys init`).")],
    release_counter: Annotated[
        int | None,
        typer.Option(help="Anti-rollback counter devices compare (default: now, unix s)."),
    ] = None,
    vendor_key: Annotated[
        list[Path],
        typer.Option("--vendor-key", "-k", help="Check the artifact's signature (repeat)."),
    ] = [],  # noqa: B006
    expires_days: Annotated[int, typer.Option(help="Lifetime of the signed bin.")] = 365,
    partial: Annotated[
        bool, typer.Option(help="Write the bin even if more signatures are needed.")
    ] = False,
    upload: Annotated[
        bool,
        typer.Option("--upload/--no-upload", help="Upload the signed bin (else `tuf upload`)."),
    ] = True,
) -> None:
    """Release an artifact to devices: sign its TUF target entry with the targets keys.

    The entry (path, length, sha256, device types, release counter, manifest
    hash) goes into its hash bin; the bin is re-signed and uploaded, and a copy
    is kept in KEYS/image/.
    """
    if not path.is_file():
        raise UsageError(f"no such artifact file: {path}")
    if not keys.is_dir():
        raise UsageError(f"no such key directory: {keys}")
    if expires_days < 1:
        raise UsageError(f"--expires-days must be at least 1, got {expires_days}")
    signed, sha256, size = _check_artifact(path, vendor_key)
    m = signed.manifest
    entry = target_entry(
        target_path(m.name, m.version),
        size,
        sha256,
        name=m.name,
        version=m.version,
        compatible=m.compatible,
        release_counter=int(time.time()) if release_counter is None else release_counter,
        manifest_sha256=hashlib.sha256(signed.signed_bytes).hexdigest(),
    )
    image = MetadataDir(keys / IMAGE_REPO)
    st = state(ctx)
    if upload:
        with st.client() as client:
            _check_uploaded(client, m.name, m.version, sha256)
            targets = _targets(image, client)
            role = bin_for(targets, entry.path)
            data = remote_metadata(client, IMAGE_REPO, role)
            if data is None:
                raise UsageError(
                    f"the server has no {role}: run `fleetcast tuf upload {keys}` first"
                )
            current = parse_metadata(json.dumps(data).encode(), f"the server's {role}")
            written, md = trust_release(
                keys, entry, targets=targets, current=current,
                expires=expiry(expires_days), partial=partial,
            )  # fmt: skip
            if written.complete:
                # Upload before keeping the copy: a bin the server refused (say,
                # the artifact is not uploaded yet) must not block the next release.
                put_metadata(client, IMAGE_REPO, role, to_bytes(md))
    else:
        targets = _targets(image, None)
        written, md = trust_release(
            keys, entry, targets=targets, current=None,
            expires=expiry(expires_days), partial=partial,
        )  # fmt: skip
    image.write(md, written.role)
    uploaded = upload and written.complete
    custom = entry.custom[CUSTOM_KEY]
    if st.output.as_json:
        st.output.data(
            {"target": entry.path, "length": entry.length, "sha256": sha256,
             "custom": entry.custom, "bin": written.role, "bin_version": written.version,
             "path": str(written.path), "missing": written.missing, "uploaded": uploaded}
        )  # fmt: skip
        return
    st.output.message(
        f"released {entry.path} ({size} bytes, release counter {custom['release_counter']}) "
        f"in {written.role} v{written.version}"
    )
    if not written.complete:
        st.output.message("still missing: " + "; ".join(written.missing))
        st.output.message(f"sign {written.path} with `fleetcast tuf sign`, then `tuf upload`")
    elif not uploaded:
        st.output.message(f"not uploaded: run `fleetcast tuf upload {keys}` where the server is")


def _check_uploaded(client: ManagementClient, name: str, version: str, sha256: str) -> None:
    """Refuse to release what the server cannot serve: devices are offered
    only uploaded artifacts, and the target must describe that very file."""
    items = client.get("/artifacts")["items"]
    found = [a for a in items if a["name"] == name and a["version"] == version]
    if not found:
        raise UsageError(
            f"the server has no artifact {name} {version}: "
            "upload it first with `fleetcast artifact upload FILE`"
        )
    if all(a["sha256"] != sha256 for a in found):
        raise UsageError(
            f"the server's {name} {version} is a different file (sha256 "
            f"{found[0]['sha256'][:16]}…, this one {sha256[:16]}…)"
        )


def _targets(image: MetadataDir, client: ManagementClient | None) -> Targets:
    """The image targets metadata: the key directory's copy, else the server's."""
    if image.latest_version("targets") or client is None:
        md = image.load("targets")
    else:
        data = remote_metadata(client, IMAGE_REPO, "targets")
        if data is None:
            raise UsageError("no image targets metadata here or on the server: run `keys init`")
        md = parse_metadata(json.dumps(data).encode(), "the server's targets")
    targets: Targets = md.signed
    return targets
