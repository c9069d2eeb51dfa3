"""``fleetcast audit list`` and ``fleetcast server --dev-tls``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from cryptography import x509

from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from tests.cli.conftest import CliRunner


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(Settings(data_dir=tmp_path / "server")) as running:
        yield running


def test_audit_list_shows_who_did_what(
    cli: CliRunner, server: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEETCAST_URL", server.url)
    monkeypatch.setenv("FLEETCAST_TOKEN", server.admin_token or "")
    assert cli("devices", "accept", "no-such-device").code == 1
    listed = cli("--json", "audit", "list")
    assert listed.code == 0, listed.err
    (event,) = json.loads(listed.out)["items"]
    assert event["action"] == "devices.accept" and event["outcome"] == "not_found"
    assert event["actor_name"] == "initial admin token"
    human = cli("audit", "list", "--action", "devices.")
    assert human.code == 0 and "devices.accept" in human.out and "not_found" in human.out
    assert "devices.accept" not in cli("audit", "list", "--actor", "someone").out


def test_server_dev_tls_creates_the_pair_once_and_serves_https(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: runs.append(kwargs))
    data = tmp_path / "data"
    first = cli("server", "--data-dir", str(data), "--dev-tls", "--port", "8443")
    assert first.code == 0, first.err
    tls = data / "tls"
    assert runs[0]["ssl_certfile"] == str(tls / "server.pem")
    assert runs[0]["ssl_keyfile"] == str(tls / "server.key")
    assert "https://127.0.0.1:8443" in first.out
    assert "ca_bundle" in first.out and "ca.pem" in first.out
    assert (tls / "server.key").stat().st_mode & 0o077 == 0, "private keys are private"
    before = {p.name: p.read_bytes() for p in tls.iterdir()}

    again = cli("server", "--data-dir", str(data), "--dev-tls")
    assert again.code == 0, again.err
    assert {p.name: p.read_bytes() for p in tls.iterdir()} == before, "reused, not recreated"

    other_host = cli("server", "--data-dir", str(data), "--dev-tls", "--host", "10.1.2.3")
    assert other_host.code == 0, other_host.err
    assert (tls / "ca.pem").read_bytes() == before["ca.pem"], "pinned agents keep working"
    cert = x509.load_pem_x509_certificate((tls / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {
        "127.0.0.1",
        "10.1.2.3",
    }

    both = cli("server", "--data-dir", str(data), "--dev-tls", "--tls-cert", "a", "--tls-key", "b")
    assert both.code != 0 and "not both" in both.err
