"""``fleetcast-tuf-client``: the tuf-conformance client-under-test CLI (docs/security.md).

The protocol is tuf-conformance's ``CLIENT-CLI.md``::

    fleetcast-tuf-client --metadata-dir DIR init TRUSTED_ROOT
    fleetcast-tuf-client --metadata-dir DIR --metadata-url URL refresh
    fleetcast-tuf-client --metadata-dir DIR --metadata-url URL \\
        --target-name PATH [--target-name PATH ...] \\
        --target-base-url URL --target-dir DIR download

It runs the agent's own TUF client: the same ``Updater`` configuration
(:data:`~fleetcast.agent.trust.repos.UPDATER_CONFIG`, through
:func:`~fleetcast.agent.trust.repos.make_updater`) and the same
:class:`~fleetcast.agent.trust.fetcher.HttpxFetcher`, without a bearer token.
Unlike the agent (whose anchor is the root file shipped on the device),
``init`` copies the trusted root into ``METADATA_DIR`` and later commands
anchor on that cached ``root.json``, as the protocol asks. Targets already
downloaded with matching length and hashes are not downloaded again.

Exit status: 0 on success, 1 when any part failed (the reason on stderr).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from tuf.api import exceptions

from fleetcast.agent.trust.fetcher import HttpxFetcher
from fleetcast.agent.trust.repos import make_updater
from fleetcast.exceptions import FleetcastError

#: Seconds for one request (the suite's slow-retrieval tests stall longer).
TIMEOUT = 15.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fleetcast-tuf-client", description=__doc__)
    parser.add_argument("--metadata-dir", type=Path, required=True)
    parser.add_argument("--metadata-url")
    parser.add_argument("--target-name", action="append", default=[])
    parser.add_argument("--target-base-url")
    parser.add_argument("--target-dir", type=Path)
    parser.add_argument("-v", "--verbose", action="count", default=0)
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="trust the given root")
    init.add_argument("trusted_root", type=Path)
    commands.add_parser("refresh", help="update the top-level metadata")
    commands.add_parser("download", help="download and verify targets")
    return parser


def _init(metadata_dir: Path, trusted_root: Path) -> None:
    metadata_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(trusted_root, metadata_dir / "root.json")


def _refresh(args: argparse.Namespace, fetcher: HttpxFetcher) -> None:
    make_updater(args.metadata_dir, args.metadata_url, fetcher, bootstrap=None).refresh()


def _download(args: argparse.Namespace, fetcher: HttpxFetcher) -> None:
    if args.target_dir is None or args.target_base_url is None or not args.target_name:
        raise SystemExit("download needs --target-name, --target-base-url and --target-dir")
    updater = make_updater(
        args.metadata_dir,
        args.metadata_url,
        fetcher,
        bootstrap=None,
        target_dir=args.target_dir,
        target_base_url=args.target_base_url,
    )
    for name in args.target_name:
        info = updater.get_targetinfo(name)
        if info is None:
            raise LookupError(f"{name} is not in the repository")
        if updater.find_cached_target(info) is None:
            updater.download_target(info)


def main(argv: list[str] | None = None) -> int:
    """Run one conformance command; return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.WARNING)
    if args.command == "init":
        try:
            _init(args.metadata_dir, args.trusted_root)
        except OSError as e:
            print(f"fleetcast-tuf-client: init failed: {e}", file=sys.stderr)
            return 1
        return 0
    if args.metadata_url is None:
        print("fleetcast-tuf-client: --metadata-url is required", file=sys.stderr)
        return 1
    fetcher = HttpxFetcher(token=None, ca_bundle=None, timeout=TIMEOUT)
    try:
        if args.command == "refresh":
            _refresh(args, fetcher)
        else:
            _download(args, fetcher)
    except (
        exceptions.RepositoryError,
        exceptions.DownloadError,
        FleetcastError,
        LookupError,
        OSError,
        ValueError,
    ) as e:
        what = f"{args.command} failed: {type(e).__name__}: {e}"
        print(f"fleetcast-tuf-client: {what}", file=sys.stderr)
        return 1
    finally:
        fetcher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
