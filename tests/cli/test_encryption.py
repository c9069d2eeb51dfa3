"""An operator builds encrypted artifacts and uploads per-device content keys from the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleetcast.artifact import read_manifest
from fleetcast.core.envelope import unwrap_key, x25519_private_from_pem
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.cli.conftest import CliRunner
from tests.encrypted import MARKER, secret_image


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(Settings(data_dir=tmp_path / "server", engine_interval=0.2)) as running:
        yield running


def _keys(cli: CliRunner, tmp_path: Path, name: str, *kind: str) -> tuple[Path, Path]:
    result = cli("--json", "keys", "generate", "-o", str(tmp_path), "--name", name, *kind)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    return Path(data["private_key"]), Path(data["public_key"])


def _build(cli: CliRunner, tmp_path: Path, key: Path, out: Path, *flags: str) -> int:
    image = tmp_path / "rootfs.img"
    image.write_bytes(secret_image("1.2.0", 200_000))
    result = cli(
        "artifact", "build", "--name", "acme-fw", "--version", "1.2.0", "-t", "acme-gw",
        "-f", str(image), "--key", str(key), "-o", str(out), *flags,
    )  # fmt: skip
    if result.code != 0:
        print(result.err)
    return result.code


def test_group_and_per_device_encryption_from_the_cli(cli: CliRunner, tmp_path: Path) -> None:
    """`keys generate --kind x25519` makes a group key pair; `artifact build --encrypt-to`
    wraps the content key for it into the manifest and `--encrypt-for-devices` writes
    OUTPUT.key (0600). The artifact file never holds the plaintext."""
    signing, _ = _keys(cli, tmp_path, "vendor")
    group_private, group_public = _keys(cli, tmp_path, "lab", "--kind", "x25519")
    assert group_private.stat().st_mode & 0o077 == 0
    out = tmp_path / "fw.fca"
    assert (
        _build(
            cli,
            tmp_path,
            signing,
            out,
            "--encrypt-to",
            str(group_public),
            "--encrypt-for-devices",
            "--chunk-size",
            "16384",
        )
        == 0
    )
    assert MARKER not in out.read_bytes()
    manifest = read_manifest(out).manifest
    assert manifest.payloads[0].encryption is not None
    assert manifest.payloads[0].encryption.chunk_size == 16384
    key_file = tmp_path / "fw.fca.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    stored = json.loads(key_file.read_text())
    assert stored["key_id"] == manifest.content_key_id
    (wrapped,) = manifest.wrapped_keys or ()
    group = x25519_private_from_pem(group_private.read_bytes())
    assert unwrap_key(wrapped, group).hex() == stored["key"]

    vendor_public = signing.with_suffix(".pub")
    stored_only = cli("artifact", "verify", str(out), "-k", str(vendor_public))
    assert stored_only.code == 0 and "content not decrypted" in stored_only.out
    full = cli("--json", "artifact", "verify", str(out), "-k", str(vendor_public),
               "--content-key", str(key_file))  # fmt: skip
    assert full.code == 0 and json.loads(full.out)["content_verified"] is True

    again = cli(
        "artifact", "build", "--name", "acme-fw", "--version", "1.2.1", "-t", "acme-gw",
        "-f", str(tmp_path / "rootfs.img"), "--key", str(signing), "-o", str(out),
        "--encrypt-for-devices",
    )  # fmt: skip
    assert again.code == 2 and "refusing to overwrite a content key" in again.err


def test_bad_encryption_flags_are_usage_errors(cli: CliRunner, tmp_path: Path) -> None:
    """An ed25519 key given as a group key, or --chunk-size without encryption."""
    signing, signing_public = _keys(cli, tmp_path, "vendor")
    out = tmp_path / "fw.fca"
    result = cli(
        "artifact", "build", "--name", "acme-fw", "--version", "1.2.0", "-t", "acme-gw",
        "-f", str(signing_public), "--key", str(signing), "-o", str(out),
        "--encrypt-to", str(signing_public),
    )  # fmt: skip
    assert result.code == 2 and "not an X25519 public key" in result.err
    result = cli(
        "artifact", "build", "--name", "acme-fw", "--version", "1.2.0", "-t", "acme-gw",
        "-f", str(signing_public), "--key", str(signing), "-o", str(out), "--chunk-size", "10",
    )  # fmt: skip
    assert result.code == 2 and "--chunk-size goes with" in result.err
    assert not out.exists()


def test_upload_with_the_content_key(
    cli: CliRunner, server: ServerThread, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`artifact upload FILE --content-key FILE.key` uploads both; the key of another
    artifact is refused before anything is sent."""
    monkeypatch.setenv("FLEETCAST_URL", server.url)
    monkeypatch.setenv("FLEETCAST_TOKEN", server.admin_token or "")
    signing, _ = _keys(cli, tmp_path, "vendor")
    out = tmp_path / "fw.fca"
    assert _build(cli, tmp_path, signing, out, "--encrypt-for-devices") == 0
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = other_dir / "fw.fca"
    assert _build(cli, other_dir, signing, other, "--encrypt-for-devices") == 0

    wrong = cli("artifact", "upload", str(out), "--content-key", str(other_dir / "fw.fca.key"))
    assert wrong.code == 2 and "is not the content key of acme-fw 1.2.0" in wrong.err
    uploaded = cli("--json", "artifact", "upload", str(out), "--content-key", f"{out}.key")
    assert uploaded.code == 0, uploaded.err
    # Repeating it (say the key upload had failed) stores the key for the same artifact.
    again = cli("--json", "artifact", "upload", str(out), "--content-key", f"{out}.key")
    assert again.code == 0, again.err
    assert json.loads(again.out)["id"] == json.loads(uploaded.out)["id"]
    audit = cli("--json", "audit", "list")
    assert audit.code == 0, audit.err
    assert "artifacts.put_content_key" in audit.out
    assert json.loads(out.with_name("fw.fca.key").read_text())["key"] not in audit.out
