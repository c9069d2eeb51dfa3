"""An operator sets up TUF from the CLI: offline keys, releases, root rotation, signing."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import FetcherInterface, Updater

from fleetcast.cli._api import ManagementClient
from fleetcast.cli.tuf import put_metadata
from fleetcast.core.signing import public_key_to_pem
from fleetcast.exceptions import ApiError
from fleetcast.server import Settings
from fleetcast.sim import ServerThread
from fleetcast.trust import CUSTOM_KEY, IMAGE_REPO, REPOS
from fleetcast.trust.keys import load_signer
from fleetcast.trust.metadir import MetadataDir
from fleetcast.trust.offline import bin_for
from tests.cli.conftest import CliRunner
from tests.factories import make_artifact
from tests.trust.tufrepo import OnlineSigner, updater


@pytest.fixture
def online_file(tmp_path: Path) -> tuple[OnlineSigner, Path]:
    """The server's online keys as `fleetcast tuf online-keys -o FILE` writes them."""
    online = OnlineSigner()
    path = tmp_path / "online-keys.json"
    path.write_text(json.dumps({r: {"keyid": s.public_key.keyid, **s.public_key.to_dict()}
                                for r, s in online.signers.items()}))  # fmt: skip
    return online, path


def _init(cli: CliRunner, directory: Path, online_keys: Path, *extra: str) -> dict[str, object]:
    result = cli(
        "--json", "keys", "init", "--dir", str(directory), "--no-upload",
        "--online-keys", str(online_keys), "--bin-bits", "4", *extra,
    )  # fmt: skip
    assert result.code == 0, result.err
    data: dict[str, object] = json.loads(result.out)
    return data


def test_keys_init_on_an_air_gapped_machine(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path]
) -> None:
    """`keys init --no-upload --online-keys FILE` writes private keys and both
    repositories' first metadata; running it again on the same directory is refused."""
    path = online_file[1]
    keys = tmp_path / "keys"
    data = _init(cli, keys, path, "--root-keys", "2", "--root-threshold", "2")
    names = sorted(Path(str(k["path"])).name for k in data["keys"])  # type: ignore[attr-defined,index]
    assert names == ["root-1.key", "root-2.key", "targets-1.key"]
    assert all(len(str(k["keyid"])) == 64 for k in data["keys"])  # type: ignore[attr-defined,index]
    assert (keys / "root-1.key").stat().st_mode & 0o777 == 0o600
    assert len(list((keys / "image").glob("1.bins-*.json"))) == 16
    assert (keys / "director" / "1.root.json").is_file()

    again = cli("keys", "init", "--dir", str(keys), "--no-upload", "--online-keys", str(path))
    assert again.code == 2 and "exists and is not empty" in again.err

    human = cli("keys", "init", "--dir", str(tmp_path / "k2"), "--no-upload",
                "--online-keys", str(path))  # fmt: skip
    assert human.code == 0, human.err
    assert "3 root and 1 targets key(s)" in human.out and "fleetcast tuf upload" in human.out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--root-keys", "3", "--root-threshold", "4"], "root threshold 4 is more than its 3"),
        (["--targets-threshold", "0"], "targets threshold must be at least 1"),
        (["--bin-bits", "40"], "--bin-bits must be between 1 and 16"),
        (["--expires-days", "0"], "--expires-days must be at least 1"),
    ],
)
def test_keys_init_refuses_impossible_settings(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path],
    args: list[str], message: str,
) -> None:  # fmt: skip
    result = cli("keys", "init", "--dir", str(tmp_path / "keys"), "--no-upload",
                 "--online-keys", str(online_file[1]), *args)  # fmt: skip
    assert result.code == 2
    assert message in result.err
    assert not (tmp_path / "keys").exists()


def test_keys_init_offline_needs_the_online_keys(cli: CliRunner, tmp_path: Path) -> None:
    result = cli("keys", "init", "--dir", str(tmp_path / "keys"), "--no-upload")
    assert result.code == 2 and "--no-upload needs --online-keys" in result.err
    bad = tmp_path / "bad.json"
    bad.write_text('{"snapshot": {"keytype": "rsa"}}')
    result = cli("keys", "init", "--dir", str(tmp_path / "keys"), "--online-keys", str(bad))
    assert result.code == 1 and "only ed25519 keys" in result.err
    assert not (tmp_path / "keys").exists()


def test_release_signs_a_target_a_device_client_finds(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:  # fmt: skip
    """`artifact release --no-upload` checks the artifact with the vendor key and
    signs its target into one bin; python-tuf's client then finds the target with
    the manifest hash an agent checks before downloading."""
    online, path = online_file
    keys = tmp_path / "keys"
    _init(cli, keys, path)
    built = make_artifact(tmp_path / "art", vendor_key, version="1.2.0")
    pub = tmp_path / "vendor.pub"
    pub.write_text(public_key_to_pem(vendor_key.public_key()))

    result = cli("--json", "artifact", "release", str(built.path), "--keys", str(keys),
                 "--no-upload", "--release-counter", "7", "--vendor-key", str(pub))  # fmt: skip
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert out["target"] == "acme-fw/1.2.0.fca" and out["bin_version"] == 2
    assert out["uploaded"] is False and Path(out["path"]).is_file()

    files = online.publish(keys / IMAGE_REPO)
    info = updater(tmp_path / "device", files["1.root.json"], files).get_targetinfo(out["target"])
    assert info is not None
    data = built.path.read_bytes()
    assert info.length == len(data)
    assert info.hashes["sha256"] == hashlib.sha256(data).hexdigest()
    assert info.custom[CUSTOM_KEY] == {
        "name": "acme-fw", "version": "1.2.0", "compatible": ["acme-gw"], "release_counter": 7,
        "manifest_sha256": hashlib.sha256(built.signed.signed_bytes).hexdigest(),
    }  # fmt: skip

    human = cli("artifact", "release", str(built.path), "--keys", str(keys), "--no-upload")
    assert human.code == 0, human.err
    assert "released acme-fw/1.2.0.fca" in human.out and "v3" in human.out


def test_release_refuses_a_bad_artifact(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:  # fmt: skip
    keys = tmp_path / "keys"
    _init(cli, keys, online_file[1])
    built = make_artifact(tmp_path / "art", vendor_key)
    other = tmp_path / "other.pub"
    other.write_text(public_key_to_pem(Ed25519PrivateKey.generate().public_key()))
    wrong_key = cli("artifact", "release", str(built.path), "--keys", str(keys), "--no-upload",
                    "--vendor-key", str(other))  # fmt: skip
    assert wrong_key.code == 1 and "untrusted" in wrong_key.err

    data = bytearray(built.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    built.path.write_bytes(bytes(data))
    tampered = cli("artifact", "release", str(built.path), "--keys", str(keys), "--no-upload")
    assert tampered.code == 1 and "error:" in tampered.err
    missing = cli("artifact", "release", str(tmp_path / "nope.fca"), "--keys", str(keys))
    assert missing.code == 2 and "no such artifact" in missing.err
    assert all(m.versions(r) == [1] for m in [MetadataDir(keys / IMAGE_REPO)]
               for r in m.roles() - {"root", "targets"})  # fmt: skip


def test_rotate_root_offline(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path]
) -> None:
    """`keys rotate-root --no-upload` adds a key to both roots; a device walks to v2."""
    online, path = online_file
    keys = tmp_path / "keys"
    _init(cli, keys, path)
    result = cli("--json", "keys", "rotate-root", str(keys), "--add-root-key", "1",
                 "--threshold", "3", "--no-upload")  # fmt: skip
    assert result.code == 0, result.err
    out = json.loads(result.out)
    assert [Path(k["path"]).name for k in out["new_keys"]] == ["root-4.key"]
    assert [(r["repo"], r["version"], r["missing"]) for r in out["roots"]] == [
        (repo, 2, []) for repo in REPOS
    ]
    files = online.publish(keys / IMAGE_REPO)
    updater(tmp_path / "device", files["1.root.json"], files).refresh()

    refused = cli("keys", "rotate-root", str(keys), "--remove-key", "nothex!!", "--no-upload")
    assert refused.code == 2 and "names no single root key" in refused.err
    bad_repo = cli("keys", "rotate-root", str(keys), "--repo", "mirror", "--no-upload")
    assert bad_repo.code == 2 and "--repo must be" in bad_repo.err


def test_two_people_sign_a_release(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path],
    vendor_key: Ed25519PrivateKey,
) -> None:  # fmt: skip
    """Targets threshold 2 with the second key on a colleague's machine: the release
    is written with --partial, the colleague adds a signature with `tuf sign`."""
    keys = tmp_path / "keys"
    _init(cli, keys, online_file[1], "--targets-keys", "2", "--targets-threshold", "2")
    colleague = tmp_path / "colleague.key"
    shutil.move(keys / "targets-2.key", colleague)
    built = make_artifact(tmp_path / "art", vendor_key)

    refused = cli("artifact", "release", str(built.path), "--keys", str(keys), "--no-upload")
    assert (
        refused.code == 2 and "1 of the 2 signatures" in refused.err and "--partial" in refused.err
    )

    partial = cli("--json", "artifact", "release", str(built.path), "--keys", str(keys),
                  "--no-upload", "--partial")  # fmt: skip
    assert partial.code == 0, partial.err
    bin_file = Path(json.loads(partial.out)["path"])
    assert json.loads(partial.out)["missing"]

    wrong = cli("tuf", "sign", str(bin_file), "--key", str(keys / "root-1.key"))
    assert wrong.code == 2 and "not a key of the" in wrong.err
    signed = cli("--json", "tuf", "sign", str(bin_file), "--key", str(colleague))
    assert signed.code == 0, signed.err
    assert json.loads(signed.out)["complete"] is True
    md: Metadata[Targets] = Metadata.from_file(str(bin_file))
    targets = MetadataDir(keys / IMAGE_REPO).load("targets").signed
    targets.verify_delegate(bin_for(targets, "acme-fw/1.1.0.fca"), md.signed_bytes, md.signatures)


def test_commands_that_need_the_server_say_when_it_is_unreachable(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path]
) -> None:
    keys = tmp_path / "keys"
    _init(cli, keys, online_file[1])
    base = ("--url", "http://127.0.0.1:9", "--token", "t")
    for args in (("tuf", "upload", str(keys)), ("tuf", "status"), ("tuf", "online-keys")):
        result = cli(*base, *args)
        assert result.code == 3, result.err
        assert "cannot reach the server" in result.err


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(Settings(data_dir=tmp_path / "server")) as running:
        yield running


@pytest.fixture
def operator(cli: CliRunner, server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("FLEETCAST_URL", server.url)
    monkeypatch.setenv("FLEETCAST_TOKEN", server.admin_token or "")
    return cli


def test_set_up_release_and_rotate_against_a_real_server(
    operator: CliRunner, server: ServerThread, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The whole operator story on a running server: `keys init` uploads both
    repositories; an artifact is refused a release until it is uploaded, then
    released into its bin, which the server shows; `tuf upload` finds nothing
    left to send; an online timestamp key is rotated through a new root."""
    keys = tmp_path / "keys"
    init = operator("keys", "init", "--dir", str(keys), "--bin-bits", "4")
    assert init.code == 0, init.err
    assert "uploaded image root v1, director root v1, image targets v1, 16 bins" in init.out

    status = json.loads(operator("--json", "tuf", "status").out)
    assert status["image"]["set_up"] and status["director"]["set_up"]
    assert status["image"]["bins"] == 16 and status["image"]["targets"] == 0

    built = make_artifact(tmp_path / "art", vendor_key, version="2.0.0")
    early = operator("artifact", "release", str(built.path), "--keys", str(keys))
    assert early.code == 2 and "upload it first" in early.err
    assert operator("artifact", "upload", str(built.path)).code == 0
    released = operator("--json", "artifact", "release", str(built.path), "--keys", str(keys))
    assert released.code == 0, released.err
    out = json.loads(released.out)
    assert out["uploaded"] is True and out["bin_version"] == 2

    status = json.loads(operator("--json", "tuf", "status").out)
    assert status["image"]["targets"] == 1
    assert status["image"]["versions"][out["bin"]] == 2
    with ManagementClient(server.url, server.admin_token or "") as client:
        served = client.get(f"/tuf/image/{out['bin']}.json")
    assert served["signed"]["targets"]["acme-fw/2.0.0.fca"]["length"] == built.path.stat().st_size
    human = operator("tuf", "status")
    assert "1 targets released" in human.out

    nothing = operator("tuf", "upload", str(keys))
    assert nothing.code == 0 and "nothing (the server is up to date)" in nothing.out

    with ManagementClient(server.url, server.admin_token or "") as client:
        pending = client.post("/tuf/online-keys/timestamp/rotate")["pending"]["keyid"]
    rotated = operator("keys", "rotate-root", str(keys), "--repo", "image")
    assert rotated.code == 0, rotated.err
    assert "uploaded image root v2" in rotated.out
    status = json.loads(operator("--json", "tuf", "status").out)
    assert status["image"]["root"]["version"] == 2
    assert status["online_keys"]["timestamp"] == {"active": pending, "pending": None}


def test_the_server_refusing_metadata_is_reported(
    operator: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path]
) -> None:
    """Metadata naming other online keys than the server's is refused with the
    server's message and a non-zero exit."""
    keys = tmp_path / "keys"
    _init(operator, keys, online_file[1])  # someone else's online keys
    result = operator("tuf", "upload", str(keys))
    assert result.code == 1
    assert "online" in result.err and "tuf_metadata_invalid" in result.err


class ServerFetcher(FetcherInterface):
    """python-tuf's client reading the image repository from the management API
    (the same stored files as the device API, behind the admin token)."""

    def __init__(self, server: ServerThread) -> None:
        self.http = httpx.Client(headers={"Authorization": f"Bearer {server.admin_token}"})

    def _fetch(self, url: str) -> Iterator[bytes]:
        response = self.http.get(url)
        if response.status_code != 200:
            raise DownloadHTTPError(f"{url}: {response.status_code}", response.status_code)
        return iter([response.content])


def _device_lookup(server: ServerThread, directory: Path, trusted: bytes, path: str) -> object:
    fetcher = ServerFetcher(server)
    try:
        client = Updater(str(directory), f"{server.url}/api/v1/tuf/image/", fetcher=fetcher,
                         bootstrap=trusted)  # fmt: skip
        return client.get_targetinfo(path)
    finally:
        fetcher.http.close()


def test_rotate_targets_against_a_real_server(
    operator: CliRunner, server: ServerThread, tmp_path: Path, vendor_key: Ed25519PrivateKey
) -> None:
    """The operator replaces the targets key after a release: `keys rotate-targets`
    uploads image root v2 (new targets key), targets and all 16 bins re-signed;
    the next release signs with the new key and is accepted, the released target
    is still served, and a bin signed with the removed key is refused (422). A
    stale copy of the key directory cannot rotate over the server's newer state."""
    keys = tmp_path / "keys"
    assert operator("keys", "init", "--dir", str(keys), "--bin-bits", "4").code == 0
    first = make_artifact(tmp_path / "a1", vendor_key, version="2.0.0")
    assert operator("artifact", "upload", str(first.path)).code == 0
    assert operator("artifact", "release", str(first.path), "--keys", str(keys)).code == 0
    device = tmp_path / "device"
    shipped = (keys / IMAGE_REPO / "1.root.json").read_bytes()
    assert _device_lookup(server, device, shipped, "acme-fw/2.0.0.fca") is not None
    stale = tmp_path / "stale-copy"
    shutil.copytree(keys, stale)
    old_key = keys / "targets-1.key"
    old_keyid = load_signer(old_key).public_key.keyid

    rotated = operator("keys", "rotate-targets", str(keys), "--add-key", "1",
                       "--remove-key", old_keyid[:12])  # fmt: skip
    assert rotated.code == 0, rotated.err
    assert "new targets key" in rotated.out and "targets-2.key" in rotated.out
    assert f"{old_key} stays on disk" in rotated.out and old_key.is_file()
    assert "uploaded image root v2, image targets v2, 16 bins" in rotated.out

    with ManagementClient(server.url, server.admin_token or "") as client:
        summary = client.get("/tuf")
    new_keyid = load_signer(keys / "targets-2.key").public_key.keyid
    assert summary["image"]["root"]["version"] == 2
    assert summary["image"]["root"]["roles"]["targets"] == {"keyids": [new_keyid], "threshold": 1}
    assert summary["director"]["root"]["version"] == 1
    assert summary["image"]["versions"]["targets"] == 2
    assert summary["image"]["targets"] == 1

    second = make_artifact(tmp_path / "a2", vendor_key, version="2.1.0")
    assert operator("artifact", "upload", str(second.path)).code == 0
    released = operator("--json", "artifact", "release", str(second.path), "--keys", str(keys))
    assert released.code == 0, released.err
    assert json.loads(released.out)["uploaded"] is True
    assert json.loads(operator("--json", "tuf", "status").out)["image"]["targets"] == 2
    # The device that trusted root v1 walks to v2 and finds both releases.
    trusted = (device / "root.json").read_bytes()
    for path in ("acme-fw/2.0.0.fca", "acme-fw/2.1.0.fca"):
        assert _device_lookup(server, device, trusted, path) is not None
    assert json.loads((device / "root.json").read_bytes())["signed"]["version"] == 2

    with ManagementClient(server.url, server.admin_token or "") as client:
        role = json.loads(released.out)["bin"]
        forged = Metadata.from_dict(client.get(f"/tuf/image/{role}.json"))
        forged.signed.version += 1
        forged.signatures.clear()
        forged.sign(load_signer(old_key))
        with pytest.raises(ApiError) as refused:
            put_metadata(client, IMAGE_REPO, role, forged.to_bytes())
    assert refused.value.status_code == 422 and refused.value.code == "tuf_metadata_invalid"

    out_of_date = operator("keys", "rotate-targets", str(stale), "--add-key", "1")
    assert out_of_date.code == 2 and "this key directory is out of date" in out_of_date.err
    assert MetadataDir(stale / IMAGE_REPO).versions("root") == [1]
    assert not (stale / "targets-2.key").exists()


def test_rotate_targets_offline_refuses_impossible_thresholds(
    cli: CliRunner, tmp_path: Path, online_file: tuple[OnlineSigner, Path]
) -> None:
    """`--no-upload` works on an air-gapped machine; thresholds no key set can meet
    are refused with a message and exit 2, leaving the directory untouched."""
    keys = tmp_path / "keys"
    _init(cli, keys, online_file[1], "--targets-keys", "2")
    refused = cli("keys", "rotate-targets", str(keys), "--threshold", "3", "--no-upload")
    assert refused.code == 2 and "targets threshold 3 is more than its 2" in refused.err
    assert not (keys / "targets-3.key").exists()
    assert MetadataDir(keys / IMAGE_REPO).versions("root") == [1]

    done = cli("--json", "keys", "rotate-targets", str(keys), "--threshold", "2", "--no-upload")
    assert done.code == 0, done.err
    out = json.loads(done.out)
    assert out["threshold"] == 2 and out["new_keys"] == [] and out["uploaded"] is False
    assert [(w["role"], w["version"]) for w in out["written"][:2]] == [("root", 2), ("targets", 2)]
    assert len(out["written"]) == 2 + 16 and not any(w["missing"] for w in out["written"])
