"""A self-signed certificate authority and server certificate, for trying HTTPS out.

``fleetcast server --dev-tls`` calls :func:`ensure_dev_tls`: on the first
start it writes a CA and a server certificate for ``localhost``,
``127.0.0.1``, ``::1`` and the listening host into ``<data-dir>/tls/``; later
starts reuse them (a new server certificate is issued by the same CA when the
host is not covered yet, so agents that pinned the CA keep working). Agents
pin ``ca.pem`` with ``ca_bundle``. Not for production: use certificates from
your own PKI with ``--tls-cert``/``--tls-key``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fleetcast.exceptions import UsageError

#: Names every development certificate covers.
DEFAULT_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
CA_DAYS: Final = 3650
SERVER_DAYS: Final = 825
_WILDCARD: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104  # names, not a bind


@dataclass(frozen=True)
class DevTls:
    """The files of a development TLS setup."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca(files: DevTls, now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Fleetcast development CA"))
        .issuer_name(_name("Fleetcast development CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(files.ca_key, _key_pem(key), private=True)
    _write(files.ca_cert, cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key


def _new_server_cert(
    files: DevTls,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    hosts: list[str],
    now: dt.datetime,
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=SERVER_DAYS))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(files.server_key, _key_pem(key), private=True)
    _write(files.server_cert, cert.public_bytes(serialization.Encoding.PEM), private=False)


def _covers(cert_path: Path, hosts: list[str], now: dt.datetime) -> bool:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc <= now + dt.timedelta(days=1):
        return False
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return all(_san(h) in names for h in hosts)


def ensure_dev_tls(directory: Path, host: str | None = None) -> DevTls:
    """The development CA and server certificate in ``directory``, created if missing.

    Raises:
        UsageError: existing files cannot be read (delete ``directory`` to start over).
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = DevTls(
        directory / "ca.pem",
        directory / "ca.key",
        directory / "server.pem",
        directory / "server.key",
    )
    hosts = list(DEFAULT_HOSTS)
    if host is not None and host not in _WILDCARD and host not in hosts:
        hosts.append(host)
    now = dt.datetime.now(dt.UTC)
    try:
        if files.ca_cert.exists() and files.ca_key.exists():
            ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
            ca_key = serialization.load_pem_private_key(files.ca_key.read_bytes(), None)
            if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
                raise ValueError("the CA key is not an EC key")
        else:
            ca, ca_key = _new_ca(files, now)
        if (
            files.server_cert.exists()
            and files.server_key.exists()
            and _covers(files.server_cert, hosts, now)
        ):
            return files
        _new_server_cert(files, ca, ca_key, hosts, now)
    except (OSError, ValueError, x509.ExtensionNotFound) as e:
        raise UsageError(
            f"development TLS files in {directory} are unusable ({e}); delete them to start over"
        ) from e
    return files
