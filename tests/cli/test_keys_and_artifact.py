"""An operator makes keys and builds, inspects and verifies artifacts from the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.cli.conftest import CliRunner


def _keys(cli: CliRunner, tmp_path: Path, name: str = "vendor") -> tuple[Path, Path]:
    result = cli("--json", "keys", "generate", "--out-dir", str(tmp_path), "--name", name)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert len(data["keyid"]) == 64
    return Path(data["private_key"]), Path(data["public_key"])


def test_keys_generate_writes_a_private_key_only_the_owner_can_read(
    cli: CliRunner, tmp_path: Path
) -> None:
    private, public = _keys(cli, tmp_path)
    assert private.stat().st_mode & 0o077 == 0
    assert "BEGIN PUBLIC KEY" in public.read_text()
    again = cli("keys", "generate", "--out-dir", str(tmp_path), "--name", "vendor")
    assert again.code == 2
    assert "refusing to overwrite" in again.err


def test_build_inspect_verify(cli: CliRunner, tmp_path: Path) -> None:
    """The artifact built by the CLI verifies with the public key and not with another."""
    private, public = _keys(cli, tmp_path)
    _, other_public = _keys(cli, tmp_path, "other")
    image = tmp_path / "rootfs.img"
    image.write_bytes(b"rootfs" * 100000)
    out = tmp_path / "fw.fca"
    built = cli(
        "artifact", "build", "--name", "acme-fw", "--version", "1.2.0", "-t", "acme-gw",
        "-f", str(image), "--key", str(private), "-o", str(out), "--depends", ">=1.0.0",
    )  # fmt: skip
    assert built.code == 0, built.err
    assert "acme-fw 1.2.0" in built.out

    inspected = cli("--json", "artifact", "inspect", str(out))
    manifest = json.loads(inspected.out)["signed"]
    assert manifest["depends"] == {"version": ">=1.0.0"}
    assert manifest["payloads"][0]["size"] == 600000

    human = cli("artifact", "inspect", str(out))
    assert "acme-gw" in human.out and "rootfs-image" in human.out

    assert cli("artifact", "verify", str(out), "--key", str(public)).code == 0
    refused = cli("artifact", "verify", str(out), "--key", str(other_public))
    assert refused.code == 1
    assert "untrusted" in refused.err


def test_verify_refuses_a_tampered_artifact(cli: CliRunner, tmp_path: Path) -> None:
    private, public = _keys(cli, tmp_path)
    image = tmp_path / "rootfs.img"
    image.write_bytes(os.urandom(300_000))  # incompressible: the middle byte is payload
    out = tmp_path / "fw.fca"
    cli(
        "artifact", "build", "--name", "fw", "--version", "1.0.0", "-t", "gw",
        "-f", str(image), "--key", str(private), "-o", str(out),
    )  # fmt: skip
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    result = cli("artifact", "verify", str(out), "--key", str(public))
    assert result.code == 1
    assert "error:" in result.err


def test_bad_input_gives_a_message_and_non_zero_exit(cli: CliRunner, tmp_path: Path) -> None:
    private, _ = _keys(cli, tmp_path)
    missing = cli("artifact", "inspect", str(tmp_path / "nope.fca"))
    assert missing.code == 2 and "no such artifact" in missing.err
    junk = tmp_path / "junk.fca"
    junk.write_bytes(b"not an artifact")
    assert cli("artifact", "inspect", str(junk)).code == 1
    image = tmp_path / "img"
    image.write_bytes(b"x")
    bad_version = cli(
        "artifact", "build", "--name", "fw", "--version", "1.0", "-t", "gw",
        "-f", str(image), "--key", str(private), "-o", str(tmp_path / "o.fca"),
    )  # fmt: skip
    assert bad_version.code == 1 and "semantic version" in bad_version.err
    bad_phase_cli = cli(
        "--token", "t", "deploy", "create", "--artifact", "x", "-t", "gw", "--phase", "ten"
    )
    assert bad_phase_cli.code == 2 and "bad --phase" in bad_phase_cli.err
    no_token = cli("devices", "list")
    assert no_token.code in (2, 3)


def test_unreachable_server_is_a_clear_transport_error(cli: CliRunner) -> None:
    result = cli("--url", "http://127.0.0.1:9", "--token", "t", "devices", "list")
    assert result.code == 3
    assert "cannot reach the server" in result.err


def test_parser_errors_exit_2_without_a_traceback(cli: CliRunner) -> None:
    unknown = cli("nosuch")
    assert unknown.code == 2 and "No such command" in unknown.err
    missing = cli("deploy", "create")
    assert missing.code == 2 and "Missing" in missing.err
    assert "Traceback" not in unknown.err + missing.err
