"""A small real HTTP server speaking the device API and serving two TUF repositories.

It plays the Fleetcast server *as an attacker who holds every online key
would*: honest by default (the baseline installs), and every part of what
it serves can be replaced by a test: the offer, the director's content and
nonce, any metadata file, the artifact bytes.

Device API subset (``docs/device-api.md``, ADR 0008), under ``/api/device/v1``:
``POST /auth``, ``PUT /inventory``, ``GET /next``,
``POST /deployments/{id}/status``, ``GET /artifacts/{id}/download`` (with
``Range``), ``POST /tuf/nonce``, ``POST /tuf/version-report`` (checked with
the device's key and current nonce, like the real server), and
``GET /tuf/{image,director}/{file}``. Every call but ``/auth`` needs the
bearer token.

The honest director answers a verified version report by re-signing the
device's director ``targets`` with the offered artifact's target and the
reported nonce (version bumped, snapshot and timestamp re-signed).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tuf.api.metadata import TargetFile

from fleetcast.core.canonical import canonical_json
from fleetcast.core.manifest import SignedManifest
from fleetcast.core.signing import public_key_from_pem
from fleetcast.trust import CUSTOM_KEY, DIRECTOR_FIELD, target_path
from tests.agent.trust.tufrepo import Keys, TufRepo

PREFIX = "/api/device/v1"
DEVICE_ID = "dev-1"
TOKEN = "device-token"


@dataclass
class Release:
    """An artifact as released: its file, signed manifest and TUF target."""

    data: bytes
    manifest: SignedManifest
    target: TargetFile

    @property
    def artifact_id(self) -> str:
        m = self.manifest.manifest
        return f"art-{m.name}-{m.version}"


def make_target(
    data: bytes,
    manifest: SignedManifest,
    *,
    compatible: list[str],
    release_counter: int,
    path: str | None = None,
) -> TargetFile:
    """The image target a vendor signs for an artifact (ADR 0008 ``custom``)."""
    m = manifest.manifest
    custom = {
        CUSTOM_KEY: {
            "name": m.name,
            "version": m.version,
            "compatible": compatible,
            "release_counter": release_counter,
            "manifest_sha256": hashlib.sha256(manifest.signed_bytes).hexdigest(),
        }
    }
    target = TargetFile.from_data(path or target_path(m.name, m.version), data, ["sha256"])
    target.unrecognized_fields["custom"] = custom
    return target


@dataclass
class Directed:
    """What the director's targets say (a compromised server may say anything)."""

    target: TargetFile | None
    deployment_id: str | None
    allow_downgrade: bool = False


@dataclass
class FleetState:
    keys: Keys = field(default_factory=Keys)
    image: TufRepo = field(init=False)
    director: TufRepo = field(init=False)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    offer: dict[str, Any] | None = None
    final: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    version_reports: list[dict[str, Any]] = field(default_factory=list)
    device_key: Ed25519PublicKey | None = None
    nonce: str | None = None
    #: Set by a test: what the director says instead of the offer's target.
    directed: Directed | None = None
    #: Set by a test: the director stops re-signing (serves what it has).
    director_frozen: bool = False
    #: Set by a test: ``(repo, file) -> bytes`` served instead of the real file.
    overrides: dict[tuple[str, str], bytes] = field(default_factory=dict)
    #: Set by a test: rewrites the artifact bytes served (a malicious mirror).
    rewrite_artifact: Callable[[bytes], bytes] | None = None
    #: Set by a test: send artifacts without Content-Length (read to the close).
    no_content_length: bool = False
    #: Set by a test: every TUF endpoint answers this status (the repository is down).
    tuf_status: int | None = None
    offered_target: TargetFile | None = None
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.image = TufRepo("image", self.keys)
        self.director = TufRepo("director", self.keys)
        self.director.targets.signed.unrecognized_fields[DIRECTOR_FIELD] = {
            "device_id": DEVICE_ID,
            "nonce": None,
        }
        self.director.clear_targets()
        self.director.publish()

    # ------------------------------------------------------------------ releasing and offering

    def release(
        self,
        data: bytes,
        manifest: SignedManifest,
        *,
        compatible: list[str] | None = None,
        release_counter: int,
        in_image_repo: bool = True,
    ) -> Release:
        """Release an artifact: its target in the image repository (signed by the vendor)."""
        target = make_target(
            data,
            manifest,
            compatible=compatible or list(manifest.manifest.compatible),
            release_counter=release_counter,
        )
        release = Release(data, manifest, target)
        self.artifacts[release.artifact_id] = data
        if in_image_repo:
            self.image.add_target(target)
            self.image.publish()
        return release

    def offer_release(
        self, release: Release, *, deployment_id: str = "dep-1", allow_downgrade: bool = False
    ) -> dict[str, Any]:
        """Offer ``release`` (and, by default, direct the device to it)."""
        self.artifacts[release.artifact_id] = release.data
        self.offer = {
            "deployment_id": deployment_id,
            "artifact_id": release.artifact_id,
            "artifact_size": len(release.data),
            "artifact_sha256": hashlib.sha256(release.data).hexdigest(),
            "download_url": f"{PREFIX}/artifacts/{release.artifact_id}/download",
            "manifest": release.manifest.to_dict(),
            "allow_downgrade": allow_downgrade,
        }
        self.offered_target = release.target
        return self.offer

    # ------------------------------------------------------------------ the director

    def _director_content(self) -> Directed:
        if self.directed is not None:
            return self.directed
        if self.offer is None or self.offer["deployment_id"] in self.final:
            return Directed(None, None)
        return Directed(
            self.offered_target, self.offer["deployment_id"], self.offer["allow_downgrade"]
        )

    def direct(self, nonce: str | None) -> None:
        """Re-sign the director's targets for ``nonce`` (what the honest server does)."""
        if self.director_frozen:
            return
        content = self._director_content()
        director = self.director
        director.clear_targets()
        if content.target is not None:
            target = TargetFile(
                length=content.target.length,
                hashes=dict(content.target.hashes),
                path=content.target.path,
                unrecognized_fields={
                    "custom": {
                        CUSTOM_KEY: {
                            "deployment_id": content.deployment_id,
                            "allow_downgrade": content.allow_downgrade,
                        }
                    }
                },
            )
            director.add_target(target)
        director.targets.signed.unrecognized_fields[DIRECTOR_FIELD] = {
            "device_id": DEVICE_ID,
            "nonce": nonce,
        }
        director.publish()

    # ------------------------------------------------------------------ serving

    def metadata(self, repo: str, filename: str) -> bytes | None:
        override = self.overrides.get((repo, filename))
        if override is not None:
            return override
        return (self.image if repo == "image" else self.director).get(filename)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm and the
    # client's delayed ACK, every answer would stall about 40 ms.
    disable_nagle_algorithm = True
    state: FleetState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status != 304:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _error(self, status: int, code: str, message: str = "") -> None:
        self._json(status, {"error": {"code": code, "message": message, "details": None}})

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw else None

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._error(401, "unauthorized", "missing or wrong token")
            return False
        return True

    def do_GET(self) -> None:
        ranged = self.headers.get("Range")
        self.state.requests.append(f"GET {self.path}" + (f" {ranged}" if ranged else ""))
        if not self._authorized():
            return
        path = self.path.split("?", 1)[0]
        state = self.state
        if path == f"{PREFIX}/next":
            with state.lock:
                offer = state.offer
                if offer is not None and offer["deployment_id"] in state.final:
                    offer = None
            self._json(200, {"update": offer})
            return
        match = re.fullmatch(rf"{PREFIX}/tuf/(image|director)/([A-Za-z0-9._-]+)", path)
        if match:
            if state.tuf_status is not None:
                self._error(state.tuf_status, "unavailable", "repository down")
                return
            with state.lock:
                data = state.metadata(match.group(1), match.group(2))
            if data is None:
                self._error(404, "not_found", "no such metadata")
            else:
                self._send(200, data, {"Content-Type": "application/json"})
            return
        match = re.fullmatch(rf"{PREFIX}/artifacts/([^/]+)/download", path)
        if match:
            self._artifact(match.group(1))
            return
        self._error(404, "not_found")

    def _artifact(self, artifact_id: str) -> None:
        state = self.state
        data = state.artifacts.get(artifact_id)
        if data is None:
            self._error(404, "not_found")
            return
        if state.rewrite_artifact is not None:
            data = state.rewrite_artifact(data)
        start, status = 0, 200
        headers = {"ETag": '"' + hashlib.sha256(data).hexdigest()[:16] + '"'}
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged and int(ranged.group(1)) < len(data):
            start, status = int(ranged.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if state.no_content_length:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
            return
        self._send(status, body, headers)

    def do_PUT(self) -> None:
        self.state.requests.append(f"PUT {self.path}")
        if not self._authorized():
            return
        self._body()
        self._send(204)

    def do_POST(self) -> None:
        self.state.requests.append(f"POST {self.path}")
        path = self.path.split("?", 1)[0]
        state = self.state
        if path == f"{PREFIX}/auth":
            body = self._body()
            state.device_key = public_key_from_pem(body["public_key"])
            self._json(200, {"device_id": DEVICE_ID, "token": TOKEN, "expires_in": 3600})
            return
        if not self._authorized():
            return
        body = self._body()
        if path.startswith(f"{PREFIX}/tuf/") and state.tuf_status is not None:
            self._error(state.tuf_status, "unavailable", "repository down")
            return
        if path == f"{PREFIX}/tuf/nonce":
            with state.lock:
                state.nonce = secrets.token_hex(16)
                nonce = state.nonce
            self._json(200, {"nonce": nonce})
            return
        if path == f"{PREFIX}/tuf/version-report":
            self._version_report(body)
            return
        match = re.fullmatch(rf"{PREFIX}/deployments/([^/]+)/status", path)
        if match:
            deployment_id = match.group(1)
            with state.lock:
                state.reports.append((deployment_id, body))
                if body["status"] in ("success", "failure", "already-installed"):
                    state.final.setdefault(deployment_id, body)
            self._send(204)
            return
        self._error(404, "not_found")

    def _version_report(self, report: Any) -> None:
        state = self.state
        signed = report["signed"]
        key = state.device_key
        try:
            assert key is not None
            key.verify(bytes.fromhex(report["signatures"][0]["sig"]), canonical_json(signed))
        except Exception:
            self._error(422, "bad_signature", "version report signature does not verify")
            return
        with state.lock:
            if signed.get("nonce") != state.nonce or signed.get("device_id") != DEVICE_ID:
                self._error(409, "stale_nonce", "not the device's current nonce")
                return
            state.version_reports.append(report)
            state.nonce = None  # single use
            state.direct(signed["nonce"])
        self._send(204)


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # The agent hangs up on answers it refuses (endless data): not an error here.
        pass


class EvilServer:
    """The server in a thread on a free loopback port; ``url`` is its base URL."""

    def __init__(self, state: FleetState | None = None) -> None:
        self.state = state or FleetState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self._httpd = _Quiet(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> EvilServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


__all__ = ["DEVICE_ID", "TOKEN", "Directed", "EvilServer", "FleetState", "Release", "make_target"]
