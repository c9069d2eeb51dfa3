"""``fleetcast keys``: the vendor's artifact-signing key pair."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.cli._context import state
from fleetcast.core.signing import key_id, private_key_to_pem, public_key_to_pem
from fleetcast.exceptions import UsageError

app = typer.Typer(help="Create and inspect signing keys.", no_args_is_help=True)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, never over an existing key."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise UsageError(f"{path} exists; refusing to overwrite a key") from e
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@app.command("generate")
def generate(
    ctx: typer.Context,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-o", help="Directory for the key files.")
    ] = Path(),
    name: Annotated[str, typer.Option(help="Base name of the key files.")] = "fleetcast",
) -> None:
    """Generate an ed25519 key pair: NAME.key (keep offline) and NAME.pub (for devices)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if public_path.exists():
        raise UsageError(f"{public_path} exists; refusing to overwrite a key")
    write_private(private_path, private_key_to_pem(key))
    public_path.write_text(public_key_to_pem(key.public_key()))
    out = state(ctx).output
    result = {
        "private_key": str(private_path),
        "public_key": str(public_path),
        "keyid": key_id(key.public_key()),
    }
    if out.as_json:
        out.data(result)
    else:
        out.message(f"private key: {private_path}  (keep it offline; it signs your artifacts)")
        out.message(f"public key:  {public_path}  (install it on devices as a trusted key)")
        out.message(f"key id:      {result['keyid']}")
