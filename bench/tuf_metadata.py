"""Benchmark: the size of TUF targets metadata for thousands of artifacts, flat vs hash bins.

    .venv/bin/python bench/tuf_metadata.py [--artifacts 1000 10000 100000]

For each fleet size N (N released artifacts), two layouts of the image
repository are built with python-tuf and signed with real ed25519 keys:

- **flat** (the baseline): one ``targets.json`` listing all N targets, each
  with Fleetcast's signed ``custom`` (device types, release counter,
  manifest hash), as a repository without delegations would hold them;
- **bins** (what ``fleetcast keys init`` sets up, ADR 0008): ``targets.json``
  with a succinct hash-bin delegation to 2**bits bins, the N targets spread
  over the bins by python-tuf's own path hash.

It prints what a device downloads to verify one artifact after a new
release (timestamp + snapshot + targets + the one bin it needs; flat: timestamp
+ snapshot + targets), what one release costs the operator (re-sign the
flat targets vs one bin) and the ratios bins / flat. Not a test: everything is
in memory.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from datetime import UTC, datetime, timedelta

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Snapshot,
    SuccinctRoles,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

from fleetcast.trust import target_path
from fleetcast.trust.offline import image_targets, target_entry

SERIALIZER = JSONSerializer(compact=True)
EXPIRES = datetime.now(UTC).replace(microsecond=0) + timedelta(days=365)


def _target(i: int) -> TargetFile:
    version = f"{i // 1000}.{i // 10 % 100}.{i % 10}"
    name = f"acme-fw-{i % 7}"
    digest = hashlib.sha256(f"{name} {version} {i}".encode()).hexdigest()
    return target_entry(
        target_path(name, version),
        64 * 1024 * 1024 + i,
        digest,
        name=name,
        version=version,
        compatible=["acme-gw", "acme-gw-v2"],
        release_counter=1_764_000_000 + i,
        manifest_sha256=hashlib.sha256(digest.encode()).hexdigest(),
    )


def _signed_bytes(md: Metadata[Targets], signer: CryptoSigner) -> tuple[bytes, float]:
    start = time.perf_counter()
    md.signatures.clear()
    md.sign(signer)
    data = md.to_bytes(SERIALIZER)
    return data, time.perf_counter() - start


def _snapshot_timestamp(files: dict[str, bytes], signer: CryptoSigner) -> tuple[int, int]:
    meta = {
        name: MetaFile(
            version=1, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()}
        )
        for name, data in files.items()
    }
    snapshot = Metadata(Snapshot(version=1, expires=EXPIRES, meta=meta))
    snapshot.sign(signer)
    snap_bytes = snapshot.to_bytes(SERIALIZER)
    timestamp = Metadata(
        Timestamp(
            version=1,
            expires=EXPIRES,
            snapshot_meta=MetaFile(
                version=1,
                length=len(snap_bytes),
                hashes={"sha256": hashlib.sha256(snap_bytes).hexdigest()},
            ),
        )
    )
    timestamp.sign(signer)
    return len(snap_bytes), len(timestamp.to_bytes(SERIALIZER))


def measure(n: int, bits: int, signer: CryptoSigner) -> dict[str, float]:
    targets = [_target(i) for i in range(n)]

    flat: Metadata[Targets] = Metadata(Targets(version=1, expires=EXPIRES))
    for t in targets:
        flat.signed.targets[t.path] = t
    flat_bytes, flat_sign = _signed_bytes(flat, signer)
    flat_snap, flat_ts = _snapshot_timestamp({"targets.json": flat_bytes}, signer)

    top = image_targets([signer.public_key], 1, bits, EXPIRES)
    top_bytes, _ = _signed_bytes(top, signer)
    assert top.signed.delegations is not None
    roles: SuccinctRoles | None = top.signed.delegations.succinct_roles
    assert roles is not None
    bins: dict[str, Metadata[Targets]] = {
        name: Metadata(Targets(version=1, expires=EXPIRES)) for name in roles.get_roles()
    }
    for t in targets:
        bins[roles.get_role_for_target(t.path)].signed.targets[t.path] = t
    bin_bytes: dict[str, bytes] = {}
    bin_sign = 0.0
    for name, md in bins.items():
        bin_bytes[f"{name}.json"], spent = _signed_bytes(md, signer)
        bin_sign = max(bin_sign, spent)
    files = {"targets.json": top_bytes, **bin_bytes}
    bins_snap, bins_ts = _snapshot_timestamp(files, signer)
    one_bin = max(len(b) for b in bin_bytes.values())
    return {
        "flat_download": flat_ts + flat_snap + len(flat_bytes),
        "bins_download": bins_ts + bins_snap + len(top_bytes) + one_bin,
        "flat_targets": len(flat_bytes),
        "bins_snapshot": bins_snap,
        "bins_largest_bin": one_bin,
        "flat_sign_s": flat_sign,
        "bins_sign_s": bin_sign,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifacts", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--bits", type=int, default=8, help="hash-bin bits (keys init default: 8)")
    args = parser.parse_args()
    signer = CryptoSigner.generate_ed25519()
    kib = 1024
    print(f"hash bins: 2**{args.bits} = {2**args.bits}; sizes in KiB (compact JSON, signed)")
    header = (
        f"{'artifacts':>9}  {'flat: device downloads':>22}  {'bins: device downloads':>22}  "
        f"{'ratio':>6}  {'bins: snapshot':>14}  {'largest bin':>11}  "
        f"{'release signs (flat / bin)':>27}"
    )
    print(header)
    for n in args.artifacts:
        r = measure(n, args.bits, signer)
        print(
            f"{n:>9}  {r['flat_download'] / kib:>22.1f}  {r['bins_download'] / kib:>22.1f}  "
            f"{r['bins_download'] / r['flat_download']:>5.3f}x  {r['bins_snapshot'] / kib:>14.1f}  "
            f"{r['bins_largest_bin'] / kib:>11.1f}  "
            f"{r['flat_sign_s'] * 1000:>12.1f} ms / {r['bins_sign_s'] * 1000:>6.1f} ms"
        )


if __name__ == "__main__":
    main()
