"""Delta benchmark: Fleetcast's two engines against bsdiff, xdelta3 and zstd --patch-from.

One command (``make bench-delta``, or ``.venv/bin/python bench/delta/run.py``)
builds real image pairs here and measures every tool on every pair:

- ``openssl``: the ``openssl`` executable of Debian bookworm's openssl
  3.0.17 and 3.0.22 packages (two upstream releases);
- ``libcrypto``: ``libcrypto.so.3`` of the same two libssl3 releases;
- ``rootfs-tar``: a root file system tree assembled from ~20 Debian
  packages (``dpkg-deb -x``), as a reproducible tar, with libssl3 changed;
- ``rootfs-ext4``: the same two trees as ext4 images (``mke2fs -d``);
- ``rootfs-ext4-1g``: a 1 GiB ext4 image holding the tree seven times (the
  memory and speed case; bsdiff is skipped there: it needs ~17x the image in
  RAM, and zstd runs at level 3 instead of 19 to finish in minutes).

For each tool: delta size, generation time, apply time and peak memory
(``ru_maxrss`` of the process, from ``wait4``). For Fleetcast's apply also
the *extra* memory: the process's peak RSS (VmHWM) minus its RSS right
before applying (interpreter and libraries loaded); the old image is read
with ``pread`` per window, never mapped, so the page cache is not counted.
Every output is checked byte for byte against the new image.

Needs: Debian's ``apt-get`` (packages are downloaded with ``apt-get
download``), ``dpkg-deb``, ``mke2fs`` (e2fsprogs) and the ``bsdiff``,
``xdelta3``, ``zstd`` packages (``apt-get install bsdiff xdelta3 zstd``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

CHANGED = ("libssl3", "openssl")
BASE_PACKAGES = (
    "libc6",
    "bash",
    "coreutils",
    "busybox",
    "tar",
    "grep",
    "sed",
    "zlib1g",
    "libzstd1",
    "liblzma5",
    "libexpat1",
    "systemd",
    "libsystemd0",
    "openssh-client",
    "curl",
    "libcurl4",
    "libxml2",
    "git",
    "perl-base",
)
FAKE_TIME = "1700000000"
FS_UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"


# --------------------------------------------------------------------------- images


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload,no-any-return]


def versions(package: str) -> list[str]:
    out = subprocess.run(
        ["apt-cache", "madison", package], check=True, capture_output=True, text=True
    ).stdout
    return sorted({line.split("|")[1].strip() for line in out.splitlines() if "|" in line})


def sorted_versions(package: str) -> list[str]:
    found = versions(package)
    # dpkg's order: insertion sort with dpkg --compare-versions (few versions).
    ordered: list[str] = []
    for version in found:
        index = len(ordered)
        while (
            index > 0
            and subprocess.run(
                ["dpkg", "--compare-versions", version, "lt", ordered[index - 1]]
            ).returncode
            == 0
        ):
            index -= 1
        ordered.insert(index, version)
    return ordered


def download(debs: Path) -> dict[str, dict[str, Path]]:
    """``{package: {"old"/"new": .deb}}``: the oldest and newest available of CHANGED."""
    debs.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, Path]] = {}
    for package in CHANGED:
        available = sorted_versions(package)
        if len(available) < 2:
            sys.exit(f"need two versions of {package}, apt knows {available}")
        out[package] = {}
        for which, version in (("old", available[0]), ("new", available[-1])):
            out[package][which] = _fetch(debs, package, version)
    for package in BASE_PACKAGES:
        out[package] = {"old": _fetch(debs, package, None)}
        out[package]["new"] = out[package]["old"]
    return out


def _fetch(debs: Path, package: str, version: str | None) -> Path:
    pattern = f"{package}_{(version or '*').replace(':', '%3a')}_*.deb"
    found = sorted(debs.glob(pattern))
    if not found:
        spec = f"{package}={version}" if version else package
        run(["apt-get", "download", "-qq", spec], cwd=debs, stderr=subprocess.DEVNULL)
        found = sorted(debs.glob(pattern))
    if not found:
        sys.exit(f"apt-get download {package} {version or ''} produced nothing")
    return found[-1]


def _tree(root: Path, debs: dict[str, dict[str, Path]], which: str, copies: int = 1) -> Path:
    if root.exists():
        return root
    tmp = root.with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for copy in range(copies):
        dest = tmp if copy == 0 else tmp / "opt" / f"copy{copy}"
        dest.mkdir(parents=True, exist_ok=True)
        for package, files in sorted(debs.items()):
            if package == "openssl":
                continue  # one changed package in the tree: libssl3
            run(["dpkg-deb", "-x", str(files[which]), str(dest)])
    tmp.rename(root)
    return root


def _tar(tree: Path, out: Path) -> Path:
    if not out.exists():

        def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = int(FAKE_TIME)
            return info

        tmp = out.with_suffix(".tmp")
        with tarfile.open(tmp, "w", format=tarfile.GNU_FORMAT) as tar:
            for path in sorted(tree.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(tree)), recursive=False, filter=clean)
        tmp.rename(out)
    return out


def _ext4(tree: Path, out: Path, size: str) -> Path:
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        env = {**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME}
        run(
            [
                "mke2fs", "-q", "-t", "ext4", "-b", "4096", "-U", FS_UUID,
                "-E", f"root_owner=0:0,hash_seed={FS_UUID}",
                "-d", str(tree), str(tmp), size,
            ],
            env=env,
        )  # fmt: skip
        tmp.rename(out)
    return out


def _member(deb: Path, member: str, out: Path) -> Path:
    if not out.exists():
        tmp = out.parent / (out.name + ".x")
        shutil.rmtree(tmp, ignore_errors=True)
        run(["dpkg-deb", "-x", str(deb), str(tmp)])
        shutil.copyfile(tmp / member, out)
        shutil.rmtree(tmp)
    return out


def build_pairs(work: Path, big: bool) -> dict[str, tuple[Path, Path]]:
    debs = download(work / "debs")
    img = work / "images"
    img.mkdir(parents=True, exist_ok=True)
    libcrypto = "usr/lib/x86_64-linux-gnu/libcrypto.so.3"
    pairs = {
        "openssl": tuple(
            _member(debs["openssl"][w], "usr/bin/openssl", img / f"openssl.{w}")
            for w in ("old", "new")
        ),
        "libcrypto": tuple(
            _member(debs["libssl3"][w], libcrypto, img / f"libcrypto.{w}") for w in ("old", "new")
        ),
    }
    trees = {w: _tree(img / f"tree.{w}", debs, w) for w in ("old", "new")}
    pairs["rootfs-tar"] = tuple(_tar(trees[w], img / f"rootfs.{w}.tar") for w in ("old", "new"))
    pairs["rootfs-ext4"] = tuple(
        _ext4(trees[w], img / f"rootfs.{w}.ext4", "192M") for w in ("old", "new")
    )
    if big:
        big_trees = {w: _tree(img / f"tree7.{w}", debs, w, copies=7) for w in ("old", "new")}
        pairs["rootfs-ext4-1g"] = tuple(
            _ext4(big_trees[w], img / f"rootfs7.{w}.ext4", "1G") for w in ("old", "new")
        )
    return {k: (v[0], v[1]) for k, v in pairs.items()}


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    pair: str
    tool: str
    new_size: int
    size: int
    gen_s: float
    apply_s: float
    gen_mib: float
    apply_mib: float
    apply_extra_mib: float | None = None
    note: str = ""


class TimedOut(Exception):
    """A tool ran longer than ``--tool-timeout`` (bsdiff on large, zero-heavy images)."""


TOOL_TIMEOUT = [1800.0]


def measured(cmd: list[str]) -> tuple[float, float, bytes]:
    """Run ``cmd`` (which prints its peak RSS as JSON); return (seconds, MiB, stdout).

    Raises:
        TimedOut: it ran longer than the tool timeout (its process group is killed).
    """
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=TOOL_TIMEOUT[0])
    except subprocess.TimeoutExpired as e:
        os.killpg(proc.pid, 9)
        proc.communicate()
        raise TimedOut(f"{' '.join(cmd[3:5])}: more than {TOOL_TIMEOUT[0]:.0f} s") from e
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.decode(errors='replace')[-2000:]}")
    data = json.loads(out.splitlines()[-1])
    return seconds, float(data["maxrss_kib"]) / 1024, out


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` through this script's ``--wrap`` (wait4 gives its own peak RSS)."""
    seconds, mib, _ = measured([sys.executable, __file__, "--wrap", "--", *cmd])
    return seconds, mib


def sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _window_log(*paths: Path) -> int:
    return max(27, min(31, max(p.stat().st_size for p in paths).bit_length()))


def external(pair: str, old: Path, new: Path, out: Path, big: bool) -> list[Result]:
    results = []
    patch, rebuilt = out / "patch", out / "rebuilt"
    long = _window_log(old, new)
    level = "-3" if big else "-19"
    tools: dict[str, tuple[list[str], list[str]]] = {
        "bsdiff": (
            ["bsdiff", str(old), str(new), str(patch)],
            ["bspatch", str(old), str(rebuilt), str(patch)],
        ),
        "xdelta3 -9": (
            ["xdelta3", "-e", "-9", "-f", "-B", str(min(1 << 30, max(1 << 24, old.stat().st_size))),
             "-s", str(old), str(new), str(patch)],
            ["xdelta3", "-d", "-f", "-B", str(min(1 << 30, max(1 << 24, old.stat().st_size))),
             "-s", str(old), str(patch), str(rebuilt)],
        ),
        f"zstd {level} --long": (
            ["zstd", "-q", "-f", level, f"--long={long}", f"--patch-from={old}", str(new),
             "-o", str(patch)],
            ["zstd", "-q", "-f", "-d", f"--long={long}", f"--patch-from={old}", str(patch),
             "-o", str(rebuilt)],
        ),
    }  # fmt: skip
    for tool, (encode, decode) in tools.items():
        if big and tool == "bsdiff":
            continue
        try:
            gen_s, gen_mib = timed(encode)
        except TimedOut as e:
            print(f"  {tool}: {e}", flush=True)
            results.append(Result(pair, tool, new.stat().st_size, 0, 0, 0, 0, 0, None, "timeout"))
            continue
        apply_s, apply_mib = timed(decode)
        if sha(rebuilt) != sha(new):
            raise RuntimeError(f"{tool} on {pair}: wrong output")
        size = patch.stat().st_size
        results.append(
            Result(pair, tool, new.stat().st_size, size, gen_s, apply_s, gen_mib, apply_mib)
        )
        patch.unlink()
        rebuilt.unlink()
    return results


def fleetcast(pair: str, old: Path, new: Path, out: Path) -> list[Result]:
    results = []
    for engine in ("hdiffpatch", "zstd"):
        delta = out / f"{engine}.delta"
        rebuilt = out / "rebuilt"
        me = [sys.executable, __file__, "--child"]
        gen_s, gen_mib, _ = measured([*me, "generate", engine, str(old), str(new), str(delta)])
        apply_s, apply_mib, raw = measured(
            [*me, "apply", engine, str(old), str(delta), str(rebuilt)]
        )
        extra = json.loads(raw.splitlines()[-1])["extra_mib"]
        if sha(rebuilt) != sha(new):
            raise RuntimeError(f"fleetcast {engine} on {pair}: wrong output")
        results.append(
            Result(
                pair,
                f"fleetcast {engine}",
                new.stat().st_size,
                delta.stat().st_size,
                gen_s,
                apply_s,
                gen_mib,
                apply_mib,
                extra,
            )
        )
        delta.unlink()
        rebuilt.unlink()
    return results


# --------------------------------------------------------------------------- child modes


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(args: list[str]) -> None:
    import resource

    from fleetcast.delta import DeltaLimits, DeltaParams, ImageRef, apply_delta, generate_delta

    mode, engine, old, second, third = args
    if mode == "generate":
        generate_delta(
            Path(old), Path(second), Path(third), DeltaParams(engine, workers=2, verify=False)
        )
        extra = None
    else:
        from fleetcast.delta import parse_header

        with Path(second).open("rb") as fh:
            header, _ = parse_header(fh.read, DeltaLimits())
        baseline = _status_kib("VmRSS")
        # Unbuffered, like the agent's slot writer: format 2 reads back what it wrote.
        with Path(second).open("rb") as fh, Path(third).open("wb", buffering=0) as sink:
            apply_delta(
                fh.read,
                Path(old),
                sink.write,
                source=ImageRef(header.source.size, header.source.sha256),
                target=ImageRef(header.target.size, header.target.sha256),
                limits=DeltaLimits(),
                max_size=Path(second).stat().st_size,
                written_path=Path(third),
            )
        extra = (_status_kib("VmHWM") - baseline) / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"maxrss_kib": maxrss, "extra_mib": extra}))


def wrap(cmd: list[str]) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        assert proc.stderr is not None
        sys.stderr.write(proc.stderr.read().decode(errors="replace"))
        sys.exit(1)
    print(json.dumps({"maxrss_kib": usage.ru_maxrss}))


# --------------------------------------------------------------------------- report


def table(results: list[Result]) -> str:
    lines = [
        "| pair | tool | delta bytes | vs best external | generate s | MB/s | apply s "
        "| apply peak MiB | apply extra MiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sizes = {}
    for r in results:
        if not r.tool.startswith("fleetcast") and not r.note:
            sizes[r.pair] = min(sizes.get(r.pair, r.size), r.size)
    for r in results:
        if r.note:
            lines.append(f"| {r.pair} | {r.tool} | {r.note} | | | | | | |")
            continue
        mbs = r.new_size / 1e6 / r.gen_s
        lines.append(
            f"| {r.pair} | {r.tool} | {r.size:,} | {r.size / sizes[r.pair]:.2f} | {r.gen_s:.2f} "
            f"| {mbs:.0f} | {r.apply_s:.2f} | {r.apply_mib:.0f} | "
            + ("-" if r.apply_extra_mib is None else f"{r.apply_extra_mib:.1f}")
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    if len(sys.argv) > 2 and sys.argv[1] == "--wrap":
        wrap(sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/fleetcast-bench-delta"))
    parser.add_argument("--no-big", action="store_true", help="skip the 1 GiB ext4 pair")
    parser.add_argument("--pairs", nargs="*", help="only these pairs")
    parser.add_argument(
        "--tool-timeout", type=float, default=1800.0, help="seconds before a tool is given up"
    )
    args = parser.parse_args()
    TOOL_TIMEOUT[0] = args.tool_timeout
    for tool in ("bsdiff", "bspatch", "xdelta3", "zstd", "mke2fs", "dpkg-deb", "apt-get"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install bsdiff xdelta3 zstd e2fsprogs")
    pairs = build_pairs(args.work, big=not args.no_big)
    results: list[Result] = []
    scratch = args.work / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    for name, (old, new) in pairs.items():
        if args.pairs and name not in args.pairs:
            continue
        print(f"{name}: {old.stat().st_size:,} -> {new.stat().st_size:,} bytes", flush=True)
        for r in external(name, old, new, scratch, big=name.endswith("1g")) + fleetcast(
            name, old, new, scratch
        ):
            results.append(r)
            print(f"  {r.tool}: {r.size:,} bytes, {r.gen_s:.2f} s", flush=True)
    report = table(results)
    print()
    print(report)
    (args.work / "results.md").write_text(report + "\n")
    (args.work / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))


if __name__ == "__main__":
    main()
