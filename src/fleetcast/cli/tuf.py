"""``fleetcast tuf``: the server's TUF repositories seen from the operator's machine.

``online-keys`` fetches the server's public online keys (for an air-gapped
``keys init --online-keys FILE``), ``sign`` adds one offline signature to a
metadata file, ``upload`` sends a key directory's newer metadata to the server
and ``status`` shows what the server serves. The helpers here are shared by
``keys init``, ``keys rotate-root``, ``keys rotate-targets`` and
``artifact release``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from fleetcast.cli._api import ManagementClient
from fleetcast.cli._context import state
from fleetcast.exceptions import ApiError, UsageError, ValidationError
from fleetcast.trust import IMAGE_REPO, REPOS
from fleetcast.trust.metadir import parse_metadata
from fleetcast.trust.offline import OnlineKeys
from fleetcast.trust.operations import Upload, sign_file, upload_plan

app = typer.Typer(
    help="The TUF repositories: online keys, offline signatures, uploads, status.",
    no_args_is_help=True,
)


def fetch_online_keys(client: ManagementClient) -> tuple[OnlineKeys, Any]:
    """The server's online keys, parsed, and the JSON as the server sent it.

    Raises:
        ApiError: the server refused (no TUF support, no permission).
        TransportError: the server could not be reached.
        ValidationError: the answer is not a set of ed25519 online keys.
    """
    raw = client.get("/tuf/online-keys")
    return OnlineKeys.from_dict(raw), raw


def read_online_keys(path: Path) -> OnlineKeys:
    """Online keys from a file written by ``fleetcast tuf online-keys -o FILE``.

    Raises:
        UsageError: the file cannot be read.
        ValidationError: it does not hold the server's online keys.
    """
    try:
        data = json.loads(path.read_bytes())
    except OSError as e:
        raise UsageError(f"cannot read online keys {path}: {e.strerror}") from e
    except ValueError as e:
        raise ValidationError(f"{path} is not JSON: {e}") from e
    return OnlineKeys.from_dict(data)


def remote_metadata(client: ManagementClient, repo: str, role: str) -> dict[str, Any] | None:
    """The server's current ``role`` metadata of ``repo``, None when it has none.

    Raises:
        ApiError: the server refused for another reason than "not found".
        TransportError: the server could not be reached.
    """
    try:
        data = client.get(f"/tuf/{repo}/{role}.json")
    except ApiError as e:
        if e.status_code == 404:
            return None
        raise
    if not isinstance(data, dict):
        raise ValidationError(f"the server's {repo} {role} metadata is not a JSON object")
    return data


def remote_version(client: ManagementClient, repo: str, role: str) -> int:
    """The server's current version of ``role`` (0: none yet).

    Raises:
        ApiError / TransportError: as :func:`remote_metadata`.
        ValidationError: the server sent something that is not TUF metadata.
    """
    data = remote_metadata(client, repo, role)
    if data is None:
        return 0
    md = parse_metadata(json.dumps(data).encode(), f"the server's {repo} {role}")
    return int(md.signed.version)


def put_metadata(client: ManagementClient, repo: str, role: str, data: bytes) -> None:
    """``PUT /api/v1/tuf/<repo>/<role>`` with signed metadata ``data`` as the body.

    Raises:
        ApiError: the server refused the metadata (e.g. 422 ``tuf_metadata_invalid``).
        TransportError: the server could not be reached.
    """
    client.request(
        "PUT",
        f"/tuf/{repo}/{role}",
        content=data,
        headers={"Content-Type": "application/json"},
    )


def remote_versions(client: ManagementClient) -> Callable[[str, str], int]:
    """The server's current version of each role, from one ``GET /api/v1/tuf``.

    Falls back to ``GET /api/v1/tuf/<repo>/<role>.json`` per role when the
    summary does not list versions.

    Raises:
        ApiError / TransportError: the summary cannot be fetched.
    """
    summary = client.get("/tuf")
    versions: dict[str, dict[str, int]] = {}
    for repo in REPOS:
        entry = summary.get(repo) if isinstance(summary, dict) else None
        listed = entry.get("versions") if isinstance(entry, dict) else None
        if isinstance(listed, dict):
            versions[repo] = {str(k): int(v) for k, v in listed.items()}

    def lookup(repo: str, role: str) -> int:
        if repo in versions:
            return versions[repo].get(role, 0)
        return remote_version(client, repo, role)

    return lookup


def upload_dir(client: ManagementClient, path: Path) -> list[Upload]:
    """Upload every file of key directory ``path`` newer than the server's copy.

    Raises:
        UsageError: a file to upload is not signed by enough keys.
        ApiError: the server refused a file (the ones before it are uploaded).
        TransportError: the server could not be reached.
    """
    plan = upload_plan(path, remote_versions(client))
    for item in plan:
        put_metadata(client, item.repo, item.role, item.path.read_bytes())
    return plan


def describe_uploads(plan: list[Upload]) -> str:
    """``"image root v1, director root v1, image targets v1, 256 bins"``."""
    bins = [u for u in plan if u.role.startswith("bins-")]
    parts = [f"{u.repo} {u.role} v{u.version}" for u in plan if u not in bins]
    if len(bins) == 1:
        parts.append(f"{bins[0].role} v{bins[0].version}")
    elif bins:
        parts.append(f"{len(bins)} bins")
    return ", ".join(parts) or "nothing (the server is up to date)"


@app.command("online-keys")
def online_keys(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write them to FILE for `keys init --online-keys`."),
    ] = None,
) -> None:
    """Fetch the server's public online keys (snapshot, timestamp, director)."""
    st = state(ctx)
    with st.client() as client:
        keys, raw = fetch_online_keys(client)
    if output is not None:
        if output.exists():
            raise UsageError(f"{output} exists; refusing to overwrite it")
        output.write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    if st.output.as_json:
        st.output.data(raw if output is None else {"path": str(output), **keys.to_dict()})
        return
    for role in ("snapshot", "timestamp", "director"):
        st.output.message(f"{role:<10} {keys.get(role).keyid}")
    if output is not None:
        st.output.message(f"written to {output}")


@app.command("sign")
def sign(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Metadata file, e.g. DIR/image/2.root.json.")],
    key: Annotated[Path, typer.Option("--key", "-k", help="Offline key file (root-N.key ...).")],
) -> None:
    """Add one signature to a metadata file of a key directory (threshold signing)."""
    if not file.is_file():
        raise UsageError(f"no such metadata file: {file}")
    result = sign_file(file, key)
    out = state(ctx).output
    if out.as_json:
        out.data(
            {"path": str(file), "role": result.role, "version": result.version,
             "complete": result.complete, "missing": result.missing}
        )  # fmt: skip
        return
    out.message(f"signed {file}")
    if result.complete:
        out.message("it has enough signatures: upload it with `fleetcast tuf upload`")
    else:
        out.message("still missing: " + "; ".join(result.missing))


@app.command("upload")
def upload(
    ctx: typer.Context,
    directory: Annotated[Path, typer.Argument(help="Key directory (from `keys init`).")],
) -> None:
    """Upload a key directory's metadata that is newer than the server's."""
    if not directory.is_dir():
        raise UsageError(f"no such key directory: {directory}")
    st = state(ctx)
    with st.client() as client:
        plan = upload_dir(client, directory)
    if st.output.as_json:
        st.output.data(
            [{"repo": u.repo, "role": u.role, "version": u.version, "path": str(u.path)}
             for u in plan]
        )  # fmt: skip
    else:
        st.output.message(f"uploaded {describe_uploads(plan)}")


@app.command("status")
def status(ctx: typer.Context) -> None:
    """Show what the server's TUF repositories hold."""
    st = state(ctx)
    with st.client() as client:
        summary = client.get("/tuf")
    if st.output.as_json or not isinstance(summary, dict):
        st.output.data(summary)
        return
    rows: list[tuple[str, Any]] = []
    for repo in REPOS:
        entry = summary.get(repo) or {}
        if not entry.get("set_up"):
            rows.append((repo, "not set up (run `fleetcast keys init`)"))
            continue
        root = entry.get("root") or {}
        rows.append((f"{repo} root", f"v{root.get('version')}, expires {root.get('expires')}"))
        versions = entry.get("versions") or {}
        if repo == IMAGE_REPO:
            rows.append(("image targets", f"v{versions.get('targets', '-')}"))
            rows.append(
                ("image bins", f"{entry.get('bins')} bins, {entry.get('targets')} targets released")
            )
            for role in ("snapshot", "timestamp"):
                info = entry.get(role) or {}
                expires = info.get("expires")
                rows.append((f"image {role}", f"v{info.get('version')}, expires {expires}"))
    for role, key in sorted((summary.get("online_keys") or {}).items()):
        pending = f" (pending {key['pending'][:16]})" if key.get("pending") else ""
        rows.append((f"{role} key", f"{str(key.get('active'))[:16]}{pending}"))
    st.output.fields("TUF repositories", rows)
