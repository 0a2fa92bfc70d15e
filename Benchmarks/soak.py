#!/usr/bin/env python3
"""Load soak: many threads reading random ranges of random files through one lazy mount.

    python3 Benchmarks/soak.py [--estargz BIN] [--threads 64] [--duration 60] [--files 200] [--json OUT]

Needs root, /dev/fuse, Debian's docker-registry and a built CLI (default .build/debug/estargz,
beside it estargz-remote). Builds an image of FILES incompressible files (1 KiB to 512 KiB, the
bytes of Tests/SnapshotterTests/Fixtures/make_busybox_image.py's data/ files), converts it to eStargz
(64 KiB chunks) into a registry on 127.0.0.1, mounts it with `estargz mount REF MNT --stats FILE`
and runs THREADS threads for DURATION seconds, each reading a random range of a random file with
O_DIRECT (every read reaches the file system, none is served by the page cache) and comparing it
with the file's bytes.

Reported (stdout, one JSON object): reads, bytes read, mismatches (a byte that differs from the
source), errors (a read that failed), the registry bytes and requests the mount made against the
blob's size (each chunk fetched once: bytes fetched stay within the blob plus the speculative tail
read at open), chunks verified against the chunks in the layer, and the mount process's peak and
final RSS (VmHWM, VmRSS). Exits 1 when a byte differed or a read failed.

Everything started is stopped and the mount removed on exit, also on failure or SIGINT/SIGTERM.
"""
import argparse
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from procs import free_port, listening, log, mounted, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIXTURE = os.path.join(ROOT, "Tests/SnapshotterTests/Fixtures/make_busybox_image.py")


def status_kib(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Soak:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="estargz-soak-")
        self.processes = []
        self.mountpoint = os.path.join(self.tmp, "mnt")

    def start(self, argv, logname):
        logfile = open(os.path.join(self.tmp, logname), "w")
        process = subprocess.Popen(argv, stdout=logfile, stderr=logfile)
        self.processes.append(process)
        return process

    def close(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if mounted(self.mountpoint):
            subprocess.run(["umount", "-l", self.mountpoint])
        shutil.rmtree(self.tmp, ignore_errors=True)

    def image(self):
        """The fixture image (busybox + data files) as an OCI layout; returns the layout and the files' bytes."""
        archive = os.path.join(self.tmp, "image.tar")
        subprocess.run([sys.executable, FIXTURE, archive, "soak", "--data-files", str(self.args.files)], check=True)
        layout = os.path.join(self.tmp, "layout")
        os.makedirs(layout)
        subprocess.run(["tar", "-xf", archive, "-C", layout], check=True)
        files = {}
        for i in range(self.args.files):
            rng = random.Random(1000 + i)
            files[f"data/f{i:03d}"] = rng.randbytes(rng.randint(1024, 512 * 1024))
        return layout, files

    def run(self):
        args = self.args
        layout, files = self.image()
        port = free_port()
        storage = os.path.join(self.tmp, "registry")
        config = os.path.join(self.tmp, "registry.yml")
        with open(config, "w") as f:
            f.write(f"version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {storage}\nhttp:\n  addr: 127.0.0.1:{port}\n")
        self.start(["docker-registry", "serve", config], "registry.log")
        wait_for(lambda: listening(port), 10, "the registry listening")
        reference = f"127.0.0.1:{port}/soak:esgz"
        subprocess.run([args.estargz, "image", "convert", "--quiet", "oci:" + layout, reference, "--chunk-size", "65536"],
                       check=True, stdout=subprocess.DEVNULL)
        blob, chunks = self.layer_facts(storage, layout)

        os.makedirs(self.mountpoint)
        stats = os.path.join(self.tmp, "stats.json")
        mount = self.start([args.estargz, "mount", reference, self.mountpoint, "--stats", stats, "--no-prefetch",
                            "--cache-size", str(args.cache_mib)], "mount.log")
        wait_for(lambda: mounted(self.mountpoint), 30, "the mount")

        names = sorted(files)
        counters = {"reads": 0, "bytes": 0, "mismatches": 0, "errors": 0}
        lock = threading.Lock()
        stop = time.time() + args.duration
        first_error = []
        rss_samples = []

        def reader(seed):
            rng = random.Random(seed)
            buffer = mmap.mmap(-1, 1 << 20)  # page-aligned, as O_DIRECT wants
            reads = nbytes = mismatches = errors = 0
            while time.time() < stop:
                name = rng.choice(names)
                data = files[name]
                # Ranges aligned to 4 KiB (O_DIRECT), up to 256 KiB, anywhere in the file.
                offset = rng.randrange(0, len(data), 4096)
                length = min(len(data) - offset, rng.choice([4096, 16384, 65536, 262144]))
                try:
                    fd = os.open(os.path.join(self.mountpoint, name), os.O_RDONLY | os.O_DIRECT)
                    try:
                        view = memoryview(buffer)[: (length + 4095) // 4096 * 4096]
                        got = os.preadv(fd, [view], offset)
                    finally:
                        os.close(fd)
                    if got != length or buffer[:length] != data[offset : offset + length]:
                        mismatches += 1
                        if not first_error:
                            first_error.append(f"{name} at {offset}+{length}: got {got} bytes, different")
                    reads += 1
                    nbytes += length
                except OSError as error:
                    errors += 1
                    if not first_error:
                        first_error.append(f"{name} at {offset}+{length}: {error}")
            with lock:
                counters["reads"] += reads
                counters["bytes"] += nbytes
                counters["mismatches"] += mismatches
                counters["errors"] += errors

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(args.threads)]
        started = time.time()
        for thread in threads:
            thread.start()
        while any(thread.is_alive() for thread in threads):
            rss = status_kib(mount.pid, "VmRSS")
            if rss:
                rss_samples.append(rss)
            time.sleep(0.5)
        for thread in threads:
            thread.join()
        elapsed = time.time() - started
        peak = status_kib(mount.pid, "VmHWM")
        final = status_kib(mount.pid, "VmRSS")
        mount.send_signal(signal.SIGTERM)
        mount.wait(30)
        with open(stats) as f:
            mount_stats = json.load(f)
        result = dict(counters)
        result.update({
            "threads": args.threads, "seconds": round(elapsed, 1), "files": args.files,
            "readsPerSecond": round(counters["reads"] / elapsed),
            "blobBytes": blob, "chunks": chunks,
            "registryBytesFetched": mount_stats.get("registryBytesFetched"),
            "registryRequests": mount_stats.get("registryRequests"),
            "chunksVerified": mount_stats.get("chunksVerified"),
            "readErrors": mount_stats.get("readErrors"),
            "peakRSSKiB": peak, "finalRSSKiB": final, "maxSampledRSSKiB": max(rss_samples) if rss_samples else None,
            "firstError": first_error[0] if first_error else None,
        })
        return result

    def layer_facts(self, storage, layout):
        """The eStargz layer blob's size, and the chunks its regular files make (64 KiB each, from the source layer)."""
        import tarfile
        blobs = os.path.join(storage, "docker/registry/v2/blobs")
        largest = max((os.path.join(d, f) for d, _, fs in os.walk(blobs) for f in fs if f == "data"), key=os.path.getsize)
        source_dir = os.path.join(layout, "blobs/sha256")
        source = max((os.path.join(source_dir, f) for f in os.listdir(source_dir)), key=os.path.getsize)
        with tarfile.open(source) as t:
            chunks = sum((m.size + 65535) // 65536 for m in t.getmembers() if m.isreg() and m.size > 0)
        return os.path.getsize(largest), chunks


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--estargz", default=os.path.join(ROOT, ".build/debug/estargz"))
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--cache-mib", type=int, default=256, help="the mount's chunk cache (--cache-size)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    soak = Soak(args)
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, lambda *_: sys.exit(130))
    try:
        result = soak.run()
    finally:
        soak.close()
    text = json.dumps(result, indent=1, sort_keys=True)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    sys.exit(0 if result["mismatches"] == 0 and result["errors"] == 0 else 1)


if __name__ == "__main__":
    main()
