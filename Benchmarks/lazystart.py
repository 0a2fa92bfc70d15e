#!/usr/bin/env python3
"""Lazy start of python from a registry over a shaped loopback, against a whole-layer pull.

    python3 Benchmarks/lazystart.py [--estargz BIN] [--rootfs-tar TAR] [--delay-ms 10] [--rate 100mbit] [--runs 3]

Needs root (tc, FUSE, chroot), Debian's docker-registry and a built CLI (default
.build/release/estargz; `swift build -c release`: estargz and estargz-remote). The rootfs is
scripts/python-rootfs.sh's (debootstrap minbase + python3-minimal, bookworm), converted once
with `estargz image convert` into a registry on 127.0.0.1.

Network: Benchmarks/delay_proxy.py in front of the registry adds DELAY ms each way (netem is not
available here) and `tbf rate RATE burst 256kb latency 100ms` limits the bandwidth between the
client and the proxy (Benchmarks/shaping.py: only the proxy's port is shaped, so the registry ->
proxy hop does not halve it). The qdisc is removed afterwards, also on failure or SIGINT/SIGTERM.

Measured, alternating, RUNS times each (medians printed, every run in the JSON):
  lazy:      `estargz mount REF MNT` + `chroot MNT /usr/bin/python3 -c 'print("hi")'`: seconds from
             starting the mount until "hi" is printed, bytes and requests from the registry;
  lazy+bg:   the same with --background-fetch running (does prefetch hold up foreground reads?);
  full:      curl the whole layer blob through the same proxy + `tar -xzf` + the same chroot;
  probe:     while --background-fetch runs, the time to read one small file near the end of the
             layer (a chunk the background fetch has not reached): it should cost about one round
             trip, not wait behind the fetches in flight.
Then, unshaped (the cache, not the network, is measured): every regular file read once through a
mount (`--cache-size` large enough for the layer) to fill the chunk cache, the page cache dropped,
and all files read again (the reads reach our chunk cache), against reading the same extracted
files from disk with a cold and a warm page cache. Results go to stdout and Benchmarks/work/lazystart.json.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from rootfs import python_rootfs_tar
from shaping import ShapedLink
from procs import drop_caches, free_port, listening, log, mounted, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


class Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class Processes:
    """Child processes started by this script, stopped (and mounts detached) at exit."""

    def __init__(self):
        self.children = []
        self.mounts = []

    def start(self, cmd, **kw):
        p = subprocess.Popen(cmd, **kw)
        self.children.append(p)
        return p

    def stop(self, p, timeout=20):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self):
        for p in reversed(self.children):
            self.stop(p, 5)
        for m in self.mounts:
            if mounted(m):
                subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL)


def registry(procs, tmp):
    port = free_port()
    config = os.path.join(tmp, "registry.yml")
    with open(config, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {tmp}/registry\nhttp:\n  addr: 127.0.0.1:{port}\n")
    procs.start(["/usr/bin/docker-registry", "serve", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: listening(port), 20, "docker-registry")
    return port


def delay_proxy(procs, target_port, delay_ms):
    p = procs.start([sys.executable, os.path.join(HERE, "delay_proxy.py"), "0", f"127.0.0.1:{target_port}",
                     "--delay-ms", str(delay_ms)], stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    assert line and line[0] == "listening", line
    return int(line[1])


def oci_layout(tar, directory):
    """A one-layer OCI layout of `tar` (gzip -1), as `estargz image convert` takes it."""
    import hashlib
    blobs = os.path.join(directory, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest, len(data)

    gz = os.path.join(directory, "layer.tar.gz")
    sh(f"gzip -n -1 -c '{tar}' > '{gz}'", shell=True)
    diff_id = "sha256:" + subprocess.run(["sha256sum", tar], check=True, capture_output=True, text=True).stdout.split()[0]
    with open(gz, "rb") as f:
        layer = put(f.read())
    os.unlink(gz)
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = put(json.dumps({"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/usr/bin:/bin"]},
                             "rootfs": {"type": "layers", "diff_ids": [diff_id]}}, sort_keys=True).encode())
    manifest = put(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer[0], "size": layer[1]}],
    }, sort_keys=True).encode())
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest[0], "size": manifest[1],
            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}, f)


def layer_of(port, repo, tag):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    with urllib.request.urlopen(request) as r:
        manifest = json.load(r)
    return manifest["layers"][0]


def hi(root):
    out = subprocess.run(["chroot", root, "/usr/bin/python3", "-c", 'print("hi")'], capture_output=True, text=True)
    if out.stdout != "hi\n":
        raise RuntimeError(f"python in {root} printed {out.stdout!r} {out.stderr!r}")


def lazy_run(args, procs, tmp, ref, background=False, probe=None):
    """Seconds to "hi", the stats JSON, and (with probe) the probe read's seconds."""
    mnt = tempfile.mkdtemp(dir=tmp, prefix="mnt-")
    stats = os.path.join(tmp, "stats.json")
    if os.path.exists(stats):
        os.unlink(stats)
    cmd = [args.estargz, "mount", ref, mnt, "--stats", stats] + (["--background-fetch"] if background else []) + args.mount_args
    procs.mounts.append(mnt)
    started = time.monotonic()
    p = procs.start(cmd, stderr=open(os.path.join(tmp, "mount.log"), "a"))
    try:
        wait_for(lambda: mounted(mnt), 60, "the mount")
        hi(mnt)
        elapsed = time.monotonic() - started
        probe_seconds = None
        if probe:
            t = time.monotonic()
            with open(os.path.join(mnt, probe), "rb") as f:
                f.read()
            probe_seconds = time.monotonic() - t
    finally:
        procs.stop(p)
    with open(stats) as f:
        return elapsed, json.load(f), probe_seconds


def full_run(args, proxy_port, tmp, repo, layer):
    """Seconds to "hi" pulling the whole layer first; (total, download) seconds."""
    root = tempfile.mkdtemp(dir=tmp, prefix="full-")
    blob = os.path.join(tmp, "layer.blob")
    started = time.monotonic()
    sh(["curl", "-sSf", "-o", blob, f"http://127.0.0.1:{proxy_port}/v2/{repo}/blobs/{layer['digest']}"])
    downloaded = time.monotonic() - started
    sh(["tar", "-xzf", blob, "--numeric-owner", "-p", "-C", root])
    hi(root)
    total = time.monotonic() - started
    os.unlink(blob)
    shutil.rmtree(root)
    return total, downloaded


def regular_files(root):
    files = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                files.append(path)
    return sorted(files)


def read_all(files, threads=1):
    """Reads every file whole; returns (seconds, bytes)."""
    total = [0]
    lock = threading.Lock()
    queue = list(files)

    def worker():
        buffer = bytearray(1 << 20)
        count = 0
        while True:
            with lock:
                if not queue:
                    break
                path = queue.pop()
            with open(path, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buffer)
                    if not n:
                        break
                    count += n
        with lock:
            total[0] += count

    started = time.monotonic()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.monotonic() - started, total[0]


def throughput(args, procs, tmp, ref, tar):
    """Cached reads through the mount vs the same files on disk (unshaped)."""
    extracted = tempfile.mkdtemp(dir=tmp, prefix="disk-")
    sh(["tar", "-xf", tar, "--numeric-owner", "-p", "-C", extracted])
    mnt = tempfile.mkdtemp(dir=tmp, prefix="mnt-")
    procs.mounts.append(mnt)
    p = procs.start([args.estargz, "mount", ref, mnt, "--cache-size", "1024"], stderr=open(os.path.join(tmp, "mount.log"), "a"))
    results = {}
    try:
        wait_for(lambda: mounted(mnt), 60, "the mount")
        files = regular_files(mnt)
        log(f"throughput: warming the chunk cache with {len(files)} files")
        read_all(files, threads=8)
        for label, threads in (("1 thread", 1), ("4 threads", 4)):
            drop_caches()
            seconds, count = read_all(files, threads)
            results[f"mount, chunk cache, {label}"] = (seconds, count)
            seconds, count = read_all(files, threads)
            results[f"mount, page cache, {label}"] = (seconds, count)
        disk_files = [extracted + f[len(mnt):] for f in files]
        for label, threads in (("1 thread", 1), ("4 threads", 4)):
            drop_caches()
            results[f"disk, cold page cache, {label}"] = read_all(disk_files, threads)
            results[f"disk, page cache, {label}"] = read_all(disk_files, threads)
        with open(os.path.join(mnt, ".stargz-snapshotter", "stats")) as f:
            results["stats"] = json.load(f)
    finally:
        procs.stop(p)
        shutil.rmtree(extracted)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--estargz", default=os.path.join(ROOT, ".build", "release", "estargz"))
    ap.add_argument("--rootfs-tar", help="default: scripts/python-rootfs.sh's tar")
    ap.add_argument("--delay-ms", type=float, default=10.0, help="added each way by delay_proxy.py (default 10)")
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mount-arg", dest="mount_args", action="append", default=[],
                    help="extra argument for the lazy runs' `estargz mount` (repeat for several, e.g. --mount-arg=--block-kib=4)")
    ap.add_argument("--probe", help="small file read during background fetch (default: the rootfs tar's last file of 1-64 KiB)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--only-throughput", action="store_true",
                    help="measure only the cached-read throughput (no shaping)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("lazystart: needs root (tc, FUSE, chroot)")
    if not os.access(args.estargz, os.X_OK):
        sys.exit(f"lazystart: no CLI at {args.estargz} (swift build -c release)")
    tar = python_rootfs_tar(args.rootfs_tar)
    if not args.probe:
        import tarfile
        with tarfile.open(tar) as t:
            small = [m.name for m in t if m.isreg() and 1024 <= m.size <= 65536]
        args.probe = small[-1][2:] if small[-1].startswith("./") else small[-1]
    log(f"probe file: {args.probe}")
    os.makedirs(WORK, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="lazystart-")
    procs = Processes()
    shaping = None

    def terminate(number, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        port = registry(procs, tmp)
        layout = os.path.join(tmp, "oci")
        os.makedirs(layout)
        log("making the image")
        oci_layout(tar, layout)
        repo = "bench/python"
        sh([args.estargz, "image", "convert", f"oci:{layout}:latest", f"127.0.0.1:{port}/{repo}:esgz", "--plain-http"],
           stdout=subprocess.DEVNULL)
        shutil.rmtree(layout)
        layer = layer_of(port, repo, "esgz")
        proxy = delay_proxy(procs, port, args.delay_ms)
        ref = f"127.0.0.1:{proxy}/{repo}:esgz"
        runs = {"lazy": [], "lazy+bg": [], "full": [], "probe": []}
        shaping = ShapedLink(proxy, args.rate, log=log)
        with (shaping if not args.only_throughput else Nothing()):
            for i in range(0 if args.only_throughput else args.runs):
                elapsed, stats, _ = lazy_run(args, procs, tmp, ref)
                runs["lazy"].append({"seconds": elapsed, "bytes": stats["registryBytesFetched"],
                                     "requests": stats["registryRequests"], "stats": stats})
                log(f"run {i + 1} lazy: hi after {elapsed:.3f} s, {stats['registryBytesFetched']} bytes in {stats['registryRequests']} requests")
                total, downloaded = full_run(args, proxy, tmp, repo, layer)
                runs["full"].append({"seconds": total, "download": downloaded, "bytes": layer["size"]})
                log(f"run {i + 1} full: hi after {total:.3f} s ({downloaded:.3f} s download)")
                elapsed, stats, probe = lazy_run(args, procs, tmp, ref, background=True, probe=args.probe)
                runs["lazy+bg"].append({"seconds": elapsed, "bytes": stats["registryBytesFetched"], "stats": stats})
                runs["probe"].append({"seconds": probe})
                log(f"run {i + 1} lazy + background fetch: hi after {elapsed:.3f} s; probe read {probe * 1000:.1f} ms")
        result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "delay_ms_each_way": args.delay_ms,
                  "rate": args.rate, "layer_bytes": layer["size"], "runs": runs,
                  "load": os.getloadavg()}
        if not args.skip_throughput:
            result["throughput"] = throughput(args, procs, tmp, f"127.0.0.1:{port}/{repo}:esgz", tar)
    finally:
        if shaping:
            shaping.remove()
        procs.close()
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(WORK, "lazystart.json"), "w") as f:
        json.dump(result, f, indent=1)
    report(result)


def median(values):
    return statistics.median(values) if values else float("nan")


def report(r):
    runs = r["runs"]
    size = r["layer_bytes"]
    print(f"{r['date']}: {len(runs['lazy'])} alternating runs, {r['rate']} tbf + {r['delay_ms_each_way']:g} ms each way, "
          f"layer {size:,} bytes, load average {r['load'][0]:.1f}\n")
    print("| path | time to `hi` (median; min–max) | bytes from the registry |")
    print("|---|---|---|")
    rows = (("lazy", "`estargz mount REF MNT` + `chroot MNT python3 -c 'print(\"hi\")'`"),
            ("lazy+bg", "the same with `--background-fetch`"),
            ("full", "curl the whole layer + `tar -xzf` + the same chroot"))
    for key, label in rows if runs["lazy"] else ():
        seconds = [x["seconds"] for x in runs[key]]
        nbytes = median([x["bytes"] for x in runs[key]])
        extra = ""
        if key == "lazy":
            extra = f" ({nbytes / size:.1%}, {median([x['requests'] for x in runs[key]]):.0f} requests)"
        if key == "full":
            extra = f" (download {median([x['download'] for x in runs[key]]):.2f} s)"
        print(f"| {label} | **{median(seconds):.2f} s** ({min(seconds):.2f}–{max(seconds):.2f}) | {nbytes:,.0f}{extra} |")
    probes = [x["seconds"] * 1000 for x in runs["probe"]] or [float("nan")]
    print(f"\nSmall-file read while the background fetch runs: median {median(probes):.1f} ms "
          f"({min(probes):.1f}–{max(probes):.1f}).")
    if "throughput" in r:
        print("\n| cached read of every regular file | MB/s | seconds |")
        print("|---|---|---|")
        for key, value in r["throughput"].items():
            if key == "stats":
                continue
            seconds, count = value
            print(f"| {key} | {count / seconds / 1e6:,.0f} | {seconds:.3f} ({count:,} bytes) |")


if __name__ == "__main__":
    main()
