#!/usr/bin/env python3
"""Side-by-side benchmark: our `estargz` CLI against the Go reference (`estargz-ref`,
Tests/Interop/refgo over Debian's stargz-snapshotter v0.12), same inputs, one run.

    make bench                       # or: Benchmarks/sidebyside.py [--quick] [--reps N] [--inputs a,b]
                                     #     [--jobs convert,list,verify,zstd] [--no-build]

Builds both tools, makes the inputs (cached in Benchmarks/work/), runs every job
alternating ours and Go (`--reps` times, default 3), and prints a markdown table
of medians (wall, CPU = user+sys, peak RSS, output size) with Go/ours ratios,
plus the machine's limits measured by Benchmarks/Limits/limits.c on the same data.
Python 3 standard library only.
"""
import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time

from rootfs import python_rootfs_tar

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")
BIN = os.path.join(WORK, "bin")
GO = "/usr/lib/go-1.19/bin/go"  # newer Go panics in v0.12's footer writer
KERNEL = os.path.join(ROOT, "Sources", "CStargzKernel")

INPUTS = {
    "rootfs": "debootstrap minbase + python3-minimal (bookworm)",
    "small": "30,000 small files",
    "big": "1 GiB of large binaries (system libraries + random)",
    "toc100k": "100,000 entries (TOC size / RSS check)",
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    log("+ " + " ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


# ---------------------------------------------------------------- building

def build_tools(build=True):
    os.makedirs(BIN, exist_ok=True)
    if build:
        sh(["swift", "build", "-c", "release"], cwd=ROOT)  # estargz and the estargz-remote it hands over to
    ours = os.path.join(subprocess.run(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT,
                                       check=True, capture_output=True, text=True).stdout.strip(), "estargz")
    if not os.path.exists(GO):
        sh(["apt-get", "install", "-y", "golang-go", "golang-github-containerd-stargz-snapshotter-dev"])
    ref = os.path.join(BIN, "estargz-ref")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=os.path.join(WORK, "gocache"))
    sh([GO, "build", "-o", ref, "./Tests/Interop/refgo"], cwd=ROOT, env=env)
    limits = os.path.join(BIN, "limits")
    srcs = [os.path.join(KERNEL, f) for f in ("sha256.c", "gzip_inflate.c", "gzip_deflate.c", "zstd.c", "xxhash.c", "status.c")]
    sh(["gcc", "-O3", "-march=native", "-std=gnu11", "-I", os.path.join(KERNEL, "include"), "-I", KERNEL,
        os.path.join(HERE, "Limits", "limits.c")] + srcs + ["-o", limits, "-lz", "-ldeflate", "-lzstd", "-lxxhash", "-lpthread"])
    return ours, ref, limits


# ------------------------------------------------------------------ inputs

def make_rootfs(path, reuse):
    source = python_rootfs_tar(reuse)
    log(f"rootfs: copying {source}")
    shutil.copyfile(source, path + ".tmp")
    os.rename(path + ".tmp", path)


def _add(tar, name, data, mode=0o644):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 1700000000
    tar.addfile(info, io.BytesIO(data))


def _adddir(tar, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = 1700000000
    tar.addfile(info)


WORDS = ("the of and to in is for on that with as by this be are from or it an at config value "
         "import def return class self none true false error path file data size offset chunk").split()


def text(rng, n):
    out, size = [], 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out).encode()[:n]


def make_small(path, files=30000, per_dir=100):
    """30,000 files of 0-16 KiB (text, some random bytes), 100 per directory, deterministic."""
    rng = random.Random(6)
    with tarfile.open(path + ".tmp", "w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(files // per_dir):
            _adddir(tar, f"d{d:03}")
            for f in range(per_dir):
                n = int(rng.expovariate(1 / 3000)) % 16384
                data = text(rng, n) if rng.random() < 0.8 else rng.randbytes(n)
                _add(tar, f"d{d:03}/f{f:03}.txt", data)
    os.rename(path + ".tmp", path)


def make_toc100k(path):
    """100,000 entries: 1,000 directories of 99 tiny files."""
    rng = random.Random(100)
    with tarfile.open(path + ".tmp", "w", format=tarfile.PAX_FORMAT) as tar:
        for d in range(1000):
            _adddir(tar, f"dir{d:04}")
            for f in range(99):
                _add(tar, f"dir{d:04}/file-{f:02}-{rng.randrange(1 << 30):08x}", text(rng, rng.randrange(0, 64)))
    os.rename(path + ".tmp", path)


class _Stream(io.RawIOBase):
    def __init__(self, pieces):
        self.pieces, self.buf = pieces, b""

    def readable(self):
        return True

    def readinto(self, b):
        while not self.buf:
            try:
                self.buf = next(self.pieces)
            except StopIteration:
                return 0
        n = min(len(b), len(self.buf))
        b[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n


def make_big(path, total=1 << 30):
    """1 GiB: files of 16-96 MiB, each a mix of 1 MiB blocks from system binaries (2/3) and random (1/3)."""
    pool = []
    for d in ("/usr/lib/x86_64-linux-gnu", "/opt/swift/usr/lib", "/usr/bin", "/usr/lib"):
        for dirpath, dirs, names in os.walk(d):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) >= 1 << 16:
                    pool.append(p)
        if len(pool) > 2000:
            break
    pool = pool[:2000]
    rng = random.Random(1)
    MB = 1 << 20

    def blocks(size):
        done = 0
        while done < size:
            n = min(MB, size - done)
            if rng.random() < 1 / 3:
                yield rng.randbytes(n)
            else:
                p = rng.choice(pool)
                with open(p, "rb") as f:
                    f.seek(rng.randrange(max(1, os.path.getsize(p) - n)) if os.path.getsize(p) > n else 0)
                    b = f.read(n)
                yield (b * (n // max(1, len(b)) + 1))[:n]
            done += n

    with tarfile.open(path + ".tmp", "w", format=tarfile.PAX_FORMAT) as tar:
        _adddir(tar, "opt")
        written, i = 0, 0
        while written < total:
            size = min(total - written, rng.randrange(16, 97) * MB + rng.randrange(MB))
            info = tarfile.TarInfo(f"opt/blob{i:03}.bin")
            info.size, info.mode, info.mtime = size, 0o755, 1700000000
            tar.addfile(info, _Stream(blocks(size)))
            written += size
            i += 1
    os.rename(path + ".tmp", path)


def ensure_input(name, args):
    os.makedirs(WORK, exist_ok=True)
    path = os.path.join(WORK, f"{name}.tar")
    if not os.path.exists(path):
        log(f"making input {name} ...")
        t = time.time()
        {"rootfs": lambda p: make_rootfs(p, args.rootfs_tar), "small": make_small, "big": make_big,
         "toc100k": make_toc100k}[name](path)
        log(f"  {name}: {os.path.getsize(path):,} bytes in {time.time() - t:.0f} s")
    return path


# --------------------------------------------------------------- measuring

# GNU time reports the child's own peak RSS. wait4's ru_maxrss cannot: Linux folds the high-water
# RSS of the address space a process leaves at execve into it, and a child forked (or vforked) from
# this script leaves ours, so it would never read below this script's RSS (tens of MB once the
# inputs were generated in-process; it read 52 MB for a 34 MB `ls` of toc100k).
GNU_TIME = "/usr/bin/time"


def measure(cmd):
    """Runs cmd; returns wall s, CPU s (user+sys of the child), peak RSS (bytes) and, for
    convert/build, its stdout (the JSON result)."""
    capture = cmd[1] in ("convert", "build")
    out = open(os.path.join(WORK, "stdout.tmp"), "w+") if capture else subprocess.DEVNULL
    rss_file = os.path.join(WORK, "rss.tmp")
    timed = os.access(GNU_TIME, os.X_OK)
    t0 = time.perf_counter()
    p = subprocess.Popen(([GNU_TIME, "-f", "%M", "-o", rss_file] if timed else []) + cmd,
                         stdout=out, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {' '.join(cmd)}\n{err}")
    # CPU: wait4 of `time` includes the command it waited for.
    rss_kb = int(open(rss_file).read().split()[-1]) if timed else ru.ru_maxrss
    result = {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": rss_kb * 1024}
    if capture:
        out.seek(0)
        result["stdout"] = out.read()
        out.close()
    return result


def drop(path):
    if os.path.exists(path):
        os.unlink(path)


def fmt_s(x):
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def fmt_mb(x):
    return f"{x / 1e6:.0f} MB" if x >= 10e6 else f"{x / 1e6:.1f} MB"


class Results:
    def __init__(self):
        self.rows = []

    def add(self, input_name, job, ours, go, extra=""):
        med = lambda runs, k: statistics.median(r[k] for r in runs)
        row = {"input": input_name, "job": job, "extra": extra,
               "ours": {k: med(ours, k) for k in ("wall", "cpu", "rss")},
               "go": {k: med(go, k) for k in ("wall", "cpu", "rss")},
               "oursRuns": [r["wall"] for r in ours], "goRuns": [r["wall"] for r in go]}
        self.rows.append(row)
        o, g = row["ours"], row["go"]
        log(f"  {input_name} {job}: ours {fmt_s(o['wall'])} go {fmt_s(g['wall'])} -> {g['wall'] / o['wall']:.1f}x {extra}")

    def table(self):
        out = ["| input | job | ours wall | ours CPU | ours RSS | Go wall | Go CPU | Go RSS | Go/ours wall | Go/ours CPU | notes |",
               "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            o, g = r["ours"], r["go"]
            out.append(f"| {r['input']} | {r['job']} | {fmt_s(o['wall'])} | {fmt_s(o['cpu'])} | {fmt_mb(o['rss'])} | "
                       f"{fmt_s(g['wall'])} | {fmt_s(g['cpu'])} | {fmt_mb(g['rss'])} | **{g['wall'] / o['wall']:.1f}x** | "
                       f"{g['cpu'] / o['cpu']:.1f}x | {r['extra']} |")
        return "\n".join(out)


def alternate(reps, ours_cmd, go_cmd, before=None):
    ours, go = [], []
    for i in range(reps):
        # Alternate which goes first, so drift on a shared machine hits both alike.
        order = [("ours", ours_cmd, ours), ("go", go_cmd, go)]
        if i % 2:
            order.reverse()
        for _, cmd, runs in order:
            if before:
                before()
            runs.append(measure(cmd))
    return ours, go


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="repetitions per job (default 3)")
    ap.add_argument("--quick", action="store_true", help="one repetition")
    ap.add_argument("--inputs", default="rootfs,small,big,toc100k", help="comma-separated: " + ",".join(INPUTS))
    ap.add_argument("--jobs", default="convert,list,verify,zstd",
                    help="comma-separated subset of convert,list,verify,zstd (zstd:chunked convert and verify)")
    ap.add_argument("--no-build", action="store_true", help="use the release binaries already built")
    ap.add_argument("--rootfs-tar", help="use this rootfs tar instead of running debootstrap")
    ap.add_argument("--out", default=os.path.join(WORK, "results.md"), help="where to write the markdown report")
    args = ap.parse_args()
    reps = 1 if args.quick else args.reps
    names = [n for n in args.inputs.split(",") if n]
    for n in names:
        if n not in INPUTS:
            raise SystemExit(f"unknown input {n}")
    ours, ref, limits = build_tools(not args.no_build)
    res = Results()
    limit_rows = []
    for name in names:
        tar = ensure_input(name, args)
        size = os.path.getsize(tar)
        log(f"== {name}: {size:,} bytes")
        blob = lambda who, lvl: os.path.join(WORK, f"{name}.{who}-{lvl}.esgz")
        jobs = set(args.jobs.split(","))
        levels = [9] if name == "toc100k" else [9, 6]
        odig = gdig = None
        for lvl in (levels if "convert" in jobs else []):
            ob, gb = blob("ours", lvl), blob("go", lvl)
            lvl_args = [] if lvl == 9 else ["--level", str(lvl)]
            o_runs, g_runs = alternate(
                reps,
                [ours, "convert", "--json", tar, ob] + lvl_args,
                [ref, "build", tar, gb] + ([] if lvl == 9 else ["-level", str(lvl)]))
            osz, gsz = os.path.getsize(ob), os.path.getsize(gb)
            label = "convert (defaults: level 9, 4 MiB)" if lvl == 9 else "convert level 6"
            res.add(name, label, o_runs, g_runs, f"size ours {osz:,} B, Go {gsz:,} B, ours/Go **{osz / gsz:.4f}**")
            if lvl == 9:  # TOC digests for verification, from each tool's own JSON
                odig = json.loads(o_runs[-1]["stdout"])["tocDigest"]
                gdig = json.loads(g_runs[-1]["stdout"])["tocDigest"]
        ob, gb = blob("ours", 9), blob("go", 9)
        if jobs == {"zstd"}:
            if name != "toc100k":
                zstd_jobs(res, name, tar, reps, ours, ref)
            continue
        if not (os.path.exists(ob) and os.path.exists(gb)):
            raise SystemExit(f"{name}: no blobs yet; run with the convert job first")
        if odig is None:  # blobs from an earlier run: digests as our reader computes them
            odig, gdig = toc_digest(ours, ob), toc_digest(ours, gb)
        entries = sum(1 for _ in subprocess.run([ours, "ls", ob], check=True, capture_output=True).stdout.splitlines())
        for who, b, dig in (("Go", gb, gdig), ("our", ob, odig)):
            if "list" in jobs:
                o_runs, g_runs = alternate(reps, [ours, "ls", b], [ref, "list", b])
                res.add(name, f"open + list TOC ({who} blob)", o_runs, g_runs, f"{entries:,} entries")
            if name == "toc100k" or "verify" not in jobs:
                continue
            o_runs, g_runs = alternate(reps, [ours, "verify", b, "--toc-digest", dig],
                                       [ref, "verify", b, "-toc-digest", dig])
            res.add(name, f"read + verify all ({who} blob)", o_runs, g_runs)
        if name != "toc100k" and "verify" in jobs:
            lim = json.loads(subprocess.run([limits, tar], check=True, capture_output=True, text=True).stdout)
            lim["input"] = name
            ours_verify = [r for r in res.rows if r["input"] == name and r["job"] == "read + verify all (our blob)"][0]
            lim["oursVerifySeconds"] = ours_verify["ours"]["wall"]
            limit_rows.append(lim)
            log(f"  limits {name}: {lim}")
        if "zstd" in jobs and name != "toc100k":
            zstd_jobs(res, name, tar, reps, ours, ref)
    report = ["## Side-by-side run", "",
              f"{time.strftime('%Y-%m-%d %H:%M')} on {os.uname().nodename}, {os.cpu_count()} cores, "
              f"load average at start/end {os.getloadavg()[0]:.1f}; medians of {reps} alternating runs.", "",
              res.table(), "",
              "### Machine limits (Benchmarks/Limits/limits.c: the kernel's code on the same layer's chunks, in memory)", "",
              "| input | chunks | MB | inflate 1 core | SHA-256 1 core | inflate+SHA 1 core | inflate+SHA all cores | limit time (all cores) | ours verify | ours / limit |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for l in limit_rows:
        report.append(f"| {l['input']} | {l['chunks']:,} | {l['bytes'] / 1e6:.0f} | {l['inflateMBps']:.0f} MB/s | "
                      f"{l['sha256MBps']:.0f} MB/s | {l['verify1MBps']:.0f} MB/s | {l['verifyNMBps']:.0f} MB/s | "
                      f"{fmt_s(l['verifyNSeconds'])} | {fmt_s(l['oursVerifySeconds'])} | "
                      f"**{100 * l['verifyNSeconds'] / l['oursVerifySeconds']:.0f}%** |")
    text_out = "\n".join(report) + "\n"
    print(text_out)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text_out)
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump({"rows": res.rows, "limits": limit_rows}, f, indent=1)
    log(f"wrote {args.out}")


def zstd_jobs(res, name, tar, reps, ours, ref):
    """zstd:chunked side by side: convert at zstd level 3 (ours) against the reference's
    nativeconverter settings (zstd.SpeedDefault), then read + verify every chunk of each blob,
    compared with our own gzip level-9 convert and verify of the same input when those ran."""
    ob, gb = (os.path.join(WORK, f"{name}.{who}.zst") for who in ("ours", "go"))
    o_runs, g_runs = alternate(reps, [ours, "convert", "--json", "--zstdchunked", tar, ob],
                               [ref, "build", tar, gb, "-compression", "zstdchunked"])
    osz, gsz = os.path.getsize(ob), os.path.getsize(gb)
    extra = f"size ours {osz:,} B, Go {gsz:,} B, ours/Go **{osz / gsz:.4f}**"
    gz = [r for r in res.rows if r["input"] == name and r["job"].startswith("convert (defaults")]
    gz_size = os.path.join(WORK, f"{name}.ours-9.esgz")
    if gz and os.path.exists(gz_size):
        speed = gz[0]["ours"]["wall"] / statistics.median(r["wall"] for r in o_runs)
        extra += (f"; vs our gzip-9 convert: **{speed:.1f}x** faster, size "
                  f"**{osz / os.path.getsize(gz_size):.3f}** of it")
    res.add(name, "convert zstd:chunked (level 3)", o_runs, g_runs, extra)
    odig = json.loads(o_runs[-1]["stdout"])["tocDigest"]
    gdig = json.loads(g_runs[-1]["stdout"])["tocDigest"]
    for who, b, dig in (("Go", gb, gdig), ("our", ob, odig)):
        o_runs, g_runs = alternate(reps, [ours, "verify", b, "--toc-digest", dig],
                                   [ref, "verify", b, "-toc-digest", dig])
        extra = ""
        gz = [r for r in res.rows if r["input"] == name and r["job"] == f"read + verify all ({who} blob)"]
        if gz:
            extra = f"vs our verify of the gzip blob: **{gz[0]['ours']['wall'] / statistics.median(r['wall'] for r in o_runs):.1f}x** faster"
        res.add(name, f"read + verify all zstd:chunked ({who} blob)", o_runs, g_runs, extra)


def toc_digest(ours, blob):
    """A blob's TOC digest as our reader computes it (for blobs made by an earlier run)."""
    out = subprocess.run([ours, "verify", blob], check=True, capture_output=True, text=True).stdout
    return out.split("TOC ")[1].split(",")[0]


if __name__ == "__main__":
    main()
