"""``fleetcast artifact``: build, inspect, verify, upload and list artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fleetcast.artifact import PayloadSource, build_artifact, read_manifest, verify_artifact
from fleetcast.cli._context import state
from fleetcast.core.manifest import PAYLOAD_TYPES, SignedManifest
from fleetcast.core.signing import private_key_from_pem, public_key_from_pem
from fleetcast.exceptions import UsageError

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
) -> None:
    """Build and sign an artifact from payload files."""
    if payload_type not in PAYLOAD_TYPES:
        raise UsageError(f"--type must be one of {', '.join(PAYLOAD_TYPES)}")
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
    )
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
) -> None:
    """Verify the signature and every payload hash; exit non-zero if anything is wrong."""
    if not path.is_file():
        raise UsageError(f"no such artifact file: {path}")
    verified = verify_artifact(path, load_public_keys(key))
    out = state(ctx).output
    result = {"ok": True, "keyid": verified.keyid, "sha256": verified.sha256, "size": verified.size}
    if out.as_json:
        out.data(result)
    else:
        m = verified.signed.manifest
        out.message(
            f"OK: {m.name} {m.version} signed by {verified.keyid[:16]}, all payload hashes match"
        )


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
) -> None:
    """Upload an artifact to the server: a Fleetcast (.fca) or Mender artifact, or with
    --name an opaque file for SWUpdate/RAUC devices (see docs/migrate.md)."""
    if not path.is_file():
        raise UsageError(f"no such artifact file: {path}")
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
