"""``fleetcast keys``: the vendor's artifact-signing key pair and the offline TUF keys.

``generate`` makes the ed25519 pair that signs artifacts (ADR 0001). ``init``,
``rotate-root`` and ``rotate-targets`` manage the offline root and targets keys
of the TUF repositories (ADR 0008): see :mod:`fleetcast.trust.operations` and
:mod:`fleetcast.trust.rotation`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fleetcast.cli._context import state
from fleetcast.cli.tuf import (
    describe_uploads,
    fetch_online_keys,
    read_online_keys,
    remote_versions,
    upload_dir,
)
from fleetcast.core.signing import key_id, private_key_to_pem, public_key_to_pem
from fleetcast.exceptions import UsageError
from fleetcast.trust import BINS_PREFIX, DEFAULT_BIN_BITS, DIRECTOR_REPO, IMAGE_REPO, REPOS
from fleetcast.trust.keys import load_signer, write_private_key
from fleetcast.trust.metadir import MetadataDir
from fleetcast.trust.offline import OnlineKeys, expiry
from fleetcast.trust.operations import InitOptions, check_init, init_dir, rotate
from fleetcast.trust.rotation import TargetsRotation, rotate_targets

app = typer.Typer(
    help="Create signing keys: the artifact key and the offline TUF keys.", no_args_is_help=True
)


def write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only, never over an existing key.

    Raises:
        UsageError: ``path`` exists.
    """
    write_private_key(path, data)


@app.command("generate")
def generate(
    ctx: typer.Context,
    out_dir: Annotated[
        Path, typer.Option("--out-dir", "-o", help="Directory for the key files.")
    ] = Path(),
    name: Annotated[str, typer.Option(help="Base name of the key files.")] = "fleetcast",
    kind: Annotated[
        str,
        typer.Option(
            help="ed25519 (signs artifacts) or x25519 (a device group's encryption key pair)."
        ),
    ] = "ed25519",
) -> None:
    """Generate a key pair: NAME.key (private) and NAME.pub.

    ed25519 (default): the artifact-signing key; keep NAME.key offline, install
    NAME.pub on devices as a trusted key. x25519: a device group's encryption key
    (ADR 0008); build with `artifact build --encrypt-to NAME.pub` and give NAME.key
    to the group's devices (agent.toml `decryption_keys`).
    """
    if kind not in ("ed25519", "x25519"):
        raise UsageError(f"--kind must be ed25519 or x25519, not {kind!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "x25519":
        _generate_group_key(ctx, out_dir, name)
        return
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


def _generate_group_key(ctx: typer.Context, out_dir: Path, name: str) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from fleetcast.core.envelope import x25519_key_id, x25519_private_to_pem, x25519_public_to_pem

    key = X25519PrivateKey.generate()
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    if public_path.exists():
        raise UsageError(f"{public_path} exists; refusing to overwrite a key")
    write_private(private_path, x25519_private_to_pem(key))
    public_path.write_text(x25519_public_to_pem(key.public_key()))
    result = {
        "private_key": str(private_path),
        "public_key": str(public_path),
        "keyid": x25519_key_id(key.public_key()),
        "kind": "x25519",
    }
    out = state(ctx).output
    if out.as_json:
        out.data(result)
    else:
        out.message(f"private key: {private_path}  (for the group's devices: decryption_keys)")
        out.message(f"public key:  {public_path}  (artifact build --encrypt-to {public_path})")
        out.message(f"key id:      {result['keyid']}")


def _online_keys(ctx: typer.Context, file: Path | None, upload: bool) -> OnlineKeys | None:
    """From ``--online-keys FILE``, else from the server unless offline (then None)."""
    if file is not None:
        return read_online_keys(file)
    if not upload:
        return None
    with state(ctx).client() as client:
        return fetch_online_keys(client)[0]


@app.command("init")
def init(
    ctx: typer.Context,
    directory: Annotated[
        Path, typer.Option("--dir", help="New key directory (must not exist or be empty).")
    ],
    root_keys: Annotated[int, typer.Option(help="Number of root keys.")] = 3,
    root_threshold: Annotated[int, typer.Option(help="Root keys needed to sign.")] = 2,
    targets_keys: Annotated[int, typer.Option(help="Number of targets (release) keys.")] = 1,
    targets_threshold: Annotated[int, typer.Option(help="Targets keys needed to sign.")] = 1,
    bin_bits: Annotated[
        int, typer.Option(help="Hash bins: 2**BITS bins (8: bins-00 ... bins-ff).")
    ] = DEFAULT_BIN_BITS,
    expires_days: Annotated[int, typer.Option(help="Lifetime of the signed metadata.")] = 365,
    online_keys: Annotated[
        Path | None,
        typer.Option(help="The server's online keys (from `tuf online-keys -o FILE`)."),
    ] = None,
    upload: Annotated[
        bool, typer.Option("--upload/--no-upload", help="Upload to the server when done.")
    ] = True,
) -> None:
    """Create the offline TUF keys and sign both repositories' first metadata."""
    opts = InitOptions(
        root_keys=root_keys,
        root_threshold=root_threshold,
        targets_keys=targets_keys,
        targets_threshold=targets_threshold,
        bin_bits=bin_bits,
        expires=expiry(_days(expires_days)),
    )
    check_init(directory, opts)
    if online_keys is None and not upload:
        raise UsageError(
            "--no-upload needs --online-keys FILE "
            "(written by `fleetcast tuf online-keys -o FILE` where the server is reachable)"
        )
    online = _online_keys(ctx, online_keys, upload)
    assert online is not None
    key_files = init_dir(directory, opts, online)
    uploaded = None
    if upload:
        with state(ctx).client() as client:
            uploaded = describe_uploads(upload_dir(client, directory))
    out = state(ctx).output
    if out.as_json:
        out.data(
            {
                "dir": str(directory),
                "keys": [
                    {"path": str(p), "keyid": load_signer(p).public_key.keyid} for p in key_files
                ],
                "uploaded": upload,
            }
        )
        return
    out.message(f"created {directory}: {root_keys} root and {targets_keys} targets key(s)")
    out.message(
        f"  root threshold {root_threshold}, targets threshold {targets_threshold}, "
        f"{2**bin_bits} hash bins"
    )
    out.message("  keep the root keys offline and apart; devices ship image/1.root.json")
    out.message("  and director/1.root.json (agent settings trust.image_root, trust.director_root)")
    if uploaded is not None:
        out.message(f"uploaded {uploaded}")
    else:
        out.message(f"not uploaded: run `fleetcast tuf upload {directory}` where the server is")


@app.command("rotate-root")
def rotate_root(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Key directory (from `keys init`).")],
    repo: Annotated[str, typer.Option(help="image, director or both.")] = "both",
    add_root_key: Annotated[int, typer.Option(help="New root keys to create and add.")] = 0,
    remove_key: Annotated[
        list[str], typer.Option(help="Root key id (or its first 8+ characters) to remove.")
    ] = [],  # noqa: B006
    threshold: Annotated[int | None, typer.Option(help="New root threshold.")] = None,
    online_keys: Annotated[
        Path | None,
        typer.Option(help="Online keys to list (default: the server's, pending ones included)."),
    ] = None,
    expires_days: Annotated[int, typer.Option(help="Lifetime of the new root.")] = 365,
    partial: Annotated[
        bool, typer.Option(help="Write it even if more signatures are needed (`tuf sign`).")
    ] = False,
    upload: Annotated[
        bool, typer.Option("--upload/--no-upload", help="Upload to the server when signed.")
    ] = True,
) -> None:
    """Write and upload root version N+1, signed by the old and the new root keys.

    Also the second half of an online-key rotation: the new root lists the
    online keys the server reports, pending ones included.
    """
    repos = {"both": list(REPOS), IMAGE_REPO: [IMAGE_REPO], DIRECTOR_REPO: [DIRECTOR_REPO]}
    if repo not in repos:
        raise UsageError("--repo must be image, director or both")
    if not directory.is_dir():
        raise UsageError(f"no such key directory: {directory}")
    online = _online_keys(ctx, online_keys, upload)
    if upload:
        with state(ctx).client() as client:
            versions = remote_versions(client)
            for name in repos[repo]:
                local = MetadataDir(directory / name).latest_version("root")
                remote = versions(name, "root")
                if remote != local:
                    raise UsageError(
                        f"the server has {name} root v{remote} and {directory} v{local}: "
                        f"run `fleetcast tuf upload {directory}` first"
                        if remote < local
                        else f"the server has {name} root v{remote}, newer than {directory}'s "
                        f"v{local}: this key directory is out of date"
                    )
    created, written = rotate(
        directory,
        repos[repo],
        add_root_keys=add_root_key,
        remove_keyids=remove_key,
        threshold=threshold,
        online=online,
        expires=expiry(_days(expires_days)),
        partial=partial,
    )
    complete = all(w.complete for w in written)
    uploaded = None
    if upload and complete:
        with state(ctx).client() as client:
            uploaded = describe_uploads(upload_dir(client, directory))
    out = state(ctx).output
    if out.as_json:
        out.data(
            {
                "new_keys": [
                    {"path": str(p), "keyid": load_signer(p).public_key.keyid} for p in created
                ],
                "roots": [
                    {"repo": w.repo, "version": w.version, "path": str(w.path),
                     "missing": w.missing}
                    for w in written
                ],
                "uploaded": uploaded is not None,
            }
        )  # fmt: skip
        return
    for path in created:
        out.message(f"new root key {path}")
    for w in written:
        state_text = "signed" if w.complete else "needs " + "; ".join(w.missing)
        out.message(f"wrote {w.path} ({state_text})")
    if uploaded is not None:
        out.message(f"uploaded {uploaded}")
    elif not complete:
        out.message("collect the missing signatures with `fleetcast tuf sign FILE --key KEY`,")
        out.message(f"then run `fleetcast tuf upload {directory}`")
    else:
        out.message(f"not uploaded: run `fleetcast tuf upload {directory}` where the server is")


@app.command("rotate-targets")
def rotate_targets_command(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Key directory (from `keys init`).")],
    add_key: Annotated[int, typer.Option(help="New targets keys to create and add.")] = 0,
    remove_key: Annotated[
        list[str], typer.Option(help="Targets key id (or its first 8+ characters) to remove.")
    ] = [],  # noqa: B006
    threshold: Annotated[int | None, typer.Option(help="New targets threshold.")] = None,
    expires_days: Annotated[
        int, typer.Option(help="Lifetime of the new root, targets and bins.")
    ] = 365,
    partial: Annotated[
        bool, typer.Option(help="Write them even if more signatures are needed (`tuf sign`).")
    ] = False,
    upload: Annotated[
        bool, typer.Option("--upload/--no-upload", help="Upload to the server when signed.")
    ] = True,
) -> None:
    """Replace the image repository's targets keys: new root, targets and every bin.

    Writes image root N+1 listing the new targets keys and threshold (signed by
    the old and new root keys), image targets delegating the hash bins to them,
    and every bin re-signed with them; then uploads root, targets and bins in
    that order. The director repository is not changed.
    """
    if not directory.is_dir():
        raise UsageError(f"no such key directory: {directory}")
    if upload:
        with state(ctx).client() as client:
            _refuse_out_of_step(directory, remote_versions(client))
    result = rotate_targets(
        directory,
        add_keys=add_key,
        remove_keyids=remove_key,
        threshold=threshold,
        expires=expiry(_days(expires_days)),
        partial=partial,
    )
    uploaded = None
    if upload and result.complete:
        with state(ctx).client() as client:
            uploaded = describe_uploads(upload_dir(client, directory))
    _report_targets_rotation(ctx, directory, result, uploaded)


def _refuse_out_of_step(directory: Path, versions: Callable[[str, str], int]) -> None:
    """Refuse when the server's image root, targets or a bin is not the local version.

    Someone else changed them (the key directory is out of date), or local
    files still wait for `tuf upload`: re-signing either would drop something.

    Raises:
        UsageError: a version differs.
    """
    image = MetadataDir(directory / IMAGE_REPO)
    roles = sorted(image.roles(), key=lambda r: (r != "root", r != "targets", r))
    for role in roles:
        if role != "root" and role != "targets" and not role.startswith(BINS_PREFIX + "-"):
            continue
        local, remote = image.latest_version(role), versions(IMAGE_REPO, role)
        if remote < local:
            raise UsageError(
                f"the server has image {role} v{remote} and {directory} v{local}: "
                f"run `fleetcast tuf upload {directory}` first"
            )
        if remote > local:
            raise UsageError(
                f"the server has image {role} v{remote}, newer than {directory}'s v{local}: "
                "someone else changed it; this key directory is out of date"
            )


def _report_targets_rotation(
    ctx: typer.Context, directory: Path, result: TargetsRotation, uploaded: str | None
) -> None:
    out = state(ctx).output
    if out.as_json:
        out.data(
            {
                "new_keys": [
                    {"path": str(p), "keyid": load_signer(p).public_key.keyid}
                    for p in result.new_keys
                ],
                "removed": [
                    {"keyid": k, "path": str(p) if p else None} for k, p in result.removed
                ],
                "keyids": result.keyids,
                "threshold": result.threshold,
                "written": [
                    {"role": w.role, "version": w.version, "path": str(w.path),
                     "missing": w.missing}
                    for w in result.written
                ],
                "uploaded": uploaded is not None,
            }
        )  # fmt: skip
        return
    for created in result.new_keys:
        out.message(f"new targets key {created}")
    for keyid, kept in result.removed:
        on_disk = f"; its file {kept} stays on disk" if kept else ""
        out.message(f"removed targets key {keyid[:16]}: no longer listed{on_disk}")
    out.message(f"targets threshold {result.threshold} of {len(result.keyids)} key(s)")
    for w in (result.root, result.targets):
        out.message(
            f"wrote {w.path} ({'signed' if w.complete else 'needs ' + '; '.join(w.missing)})"
        )
    short = [w for w in result.bins if not w.complete]
    out.message(
        f"wrote {len(result.bins)} bins re-signed with the new keys"
        + (f" ({len(short)} need more signatures)" if short else "")
    )
    if uploaded is not None:
        out.message(f"uploaded {uploaded}")
    elif not result.complete:
        out.message("collect the missing signatures with `fleetcast tuf sign FILE --key KEY`,")
        out.message(f"then run `fleetcast tuf upload {directory}`")
    else:
        out.message(f"not uploaded: run `fleetcast tuf upload {directory}` where the server is")


def _days(days: int) -> int:
    if days < 1:
        raise UsageError(f"--expires-days must be at least 1, got {days}")
    return days
