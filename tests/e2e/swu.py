"""Build signed SWUpdate images (``.swu``) the way a vendor's build system would.

A ``.swu`` is a cpio archive ("newc"/"crc" variant) whose first member is
``sw-description`` (libconfig), followed by ``sw-description.sig`` (a
detached CMS signature over it, DER) and the images it lists, each with its
sha256. Debian's swupdate is built with CMS signature verification, so it
is started with ``-k <signer certificate>`` and refuses unsigned images.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class SwuSigner:
    """A self-signed S/MIME signing certificate (swupdate ``-k``) and its key."""

    cert_pem: bytes
    key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls) -> SwuSigner:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fleetcast test vendor")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM), key)

    def sign(self, data: bytes) -> bytes:
        """A detached DER CMS signature, like ``openssl cms -sign -binary -nosmimecap``."""
        cert = x509.load_pem_x509_certificate(self.cert_pem)
        return (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(data)
            .add_signer(cert, self.key, hashes.SHA256())
            .sign(
                serialization.Encoding.DER,
                [
                    pkcs7.PKCS7Options.DetachedSignature,
                    pkcs7.PKCS7Options.Binary,
                    pkcs7.PKCS7Options.NoCapabilities,
                ],
            )
        )


#: swupdate (built with hardware compatibility checks) is started with
#: ``-H {HW_BOARD}:{HW_REVISION}``; the images declare that revision.
HW_BOARD = "fleetcast-test"
HW_REVISION = "1.0"


def _cpio_member(name: str, data: bytes, ino: int) -> bytes:
    checksum = sum(data) & 0xFFFFFFFF
    encoded = name.encode() + b"\0"
    fields = [ino, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), checksum]
    header = b"070702" + b"".join(f"{v:08X}".encode() for v in fields)
    out = header + encoded
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def cpio_crc(members: list[tuple[str, bytes]]) -> bytes:
    """A cpio archive in the "crc" (070702) format swupdate reads."""
    out = b"".join(_cpio_member(name, data, i + 1) for i, (name, data) in enumerate(members))
    out += _cpio_member("TRAILER!!!", b"", 0)
    return out + b"\0" * (-len(out) % 512)


def build_swu(
    path: Path,
    signer: SwuSigner,
    *,
    version: str,
    payload: bytes,
    target: Path,
    corrupt_hash: bool = False,
) -> Path:
    """A signed ``.swu`` whose ``rawfile`` handler writes ``payload`` to ``target``.

    ``corrupt_hash`` signs a wrong sha256 for the payload: swupdate then
    fails the install (a vendor build gone wrong), which the server must
    see as a failure.
    """
    digest = hashlib.sha256(payload).hexdigest()
    if corrupt_hash:
        digest = hashlib.sha256(payload + b"!").hexdigest()
    description = f"""software =
{{
    version = "{version}";
    description = "fleetcast test image {version}";
    hardware-compatibility: [ "{HW_REVISION}" ];
    images: (
        {{
            filename = "payload.bin";
            type = "rawfile";
            path = "{target}";
            sha256 = "{digest}";
        }}
    );
}}
""".encode()
    archive = cpio_crc(
        [
            ("sw-description", description),
            ("sw-description.sig", signer.sign(description)),
            ("payload.bin", payload),
        ]
    )
    path.write_bytes(archive)
    return path
