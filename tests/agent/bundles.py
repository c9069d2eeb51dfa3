"""Test helpers: signing certificates, SWUpdate ``.swu`` files and RAUC bundles, made with
the real tools (openssl, rauc) where the format needs them."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path


def make_cert(directory: Path, name: str = "fleetcast-test") -> tuple[Path, Path]:
    """A self-signed code-signing certificate and key (PEM), made with openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.cert.pem", directory / f"{name}.key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650"),
            *("-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}"),
            *("-addext", "keyUsage=digitalSignature"),
            *("-addext", "extendedKeyUsage=emailProtection"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def cpio_newc_crc(files: list[tuple[str, bytes]]) -> bytes:
    """A cpio archive in the ``070702`` (newc with checksum) format SWUpdate reads."""
    out = bytearray()

    def pad() -> None:
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, data) in enumerate([*files, ("TRAILER!!!", b"")], 1):
        trailer = name == "TRAILER!!!"
        fields = [
            0 if trailer else ino,
            0 if trailer else 0o100644,
            0,
            0,
            1,
            0,
            len(data),
            0,
            0,
            0,
            0,
            len(name) + 1,
            sum(data) & 0xFFFFFFFF,
        ]
        out += b"070702" + b"".join(f"{v:08X}".encode() for v in fields)
        out += name.encode() + b"\0"
        pad()
        out += data
        pad()
    out.extend(b"\0" * (-len(out) % 512))
    return bytes(out)


def make_swu(
    directory: Path,
    *,
    image: bytes,
    slot_a: Path,
    slot_b: Path,
    cert: Path,
    key: Path,
    version: str = "1.1.0",
    hardware: str = "1.0",
    declared_sha256: str | None = None,
) -> Path:
    """A signed ``.swu``: one raw image, ``copy1`` writes slot a, ``copy2`` slot b."""
    directory.mkdir(parents=True, exist_ok=True)
    sha = declared_sha256 or hashlib.sha256(image).hexdigest()

    def copy(device: Path) -> str:
        return (
            f'{{ images: ( {{ filename = "rootfs.img"; device = "{device}"; '
            f'type = "raw"; sha256 = "{sha}"; }} ); }}'
        )

    description = (
        "software =\n{\n"
        f'  version = "{version}";\n'
        f'  hardware-compatibility = [ "{hardware}" ];\n'
        f"  stable = {{\n    copy1 = {copy(slot_a)};\n    copy2 = {copy(slot_b)};\n  }};\n}}\n"
    ).encode()
    desc_file = directory / "sw-description"
    desc_file.write_bytes(description)
    sig_file = directory / "sw-description.sig"
    subprocess.run(
        [
            *("openssl", "cms", "-sign", "-in", str(desc_file), "-out", str(sig_file)),
            *("-signer", str(cert), "-inkey", str(key), "-outform", "DER"),
            *("-nosmimecap", "-binary"),
        ],
        check=True,
        capture_output=True,
    )
    swu = directory / f"update-{version}.swu"
    swu.write_bytes(
        cpio_newc_crc(
            [
                ("sw-description", description),
                ("sw-description.sig", sig_file.read_bytes()),
                ("rootfs.img", image),
            ]
        )
    )
    return swu


def make_raucb(
    directory: Path,
    *,
    image: bytes,
    cert: Path,
    key: Path,
    compatible: str = "fleetcast-test",
    version: str = "1.1.0",
) -> Path:
    """A signed RAUC bundle (``plain`` format, one ``rootfs`` image), made by ``rauc bundle``."""
    content = directory / f"bundle-{version}"
    content.mkdir(parents=True)
    (content / "rootfs.img").write_bytes(image)
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n\n"
        "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.img\n"
    )
    bundle = directory / f"update-{version}.raucb"
    subprocess.run(
        ["rauc", "bundle", "--cert", str(cert), "--key", str(key), str(content), str(bundle)],
        check=True,
        capture_output=True,
    )
    return bundle


__all__ = ["cpio_newc_crc", "make_cert", "make_raucb", "make_swu"]
