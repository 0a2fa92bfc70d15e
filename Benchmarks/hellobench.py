#!/usr/bin/env python3
"""HelloBench-style cold start: our snapshotter against the reference Stargz Snapshotter.

    python3 Benchmarks/hellobench.py [--reps 3] [--workloads hi,heavy] [--quick]   # = make hellobench

Needs root, /dev/fuse, containerd, runc, ctr-remote (Debian's stargz-snapshotter), docker-registry,
skopeo, Go 1.19 with golang-github-containerd-stargz-snapshotter-dev. Every run starts from a fresh
containerd (temp root/state/config) and a fresh snapshotter (new root, empty caches), after
`echo 3 > /proc/sys/vm/drop_caches`. The registry is Debian's docker-registry on loopback behind
Benchmarks/delay_proxy.py (10 ms each way), with `tbf rate 100mbit burst 256kb latency 100ms` on
the client <-> proxy hop of lo while measuring (Benchmarks/shaping.py: a root tbf would shape the
proxy -> registry hop too and halve the bandwidth). The tc qdisc, FUSE mounts and every process are removed
on exit, also on failure or Ctrl-C.

zstd:chunked images (ours: `image convert/optimize --zstdchunked`; the reference's: `ctr-remote image
convert/optimize --zstdchunked --oci`) run through both snapshotters beside the eStargz ones, plain and
optimized (`--only zstd` runs just those; `--no-zstd` leaves them out).

Bytes fetched are counted by the delay proxy (registry -> client, everything: auth, manifests,
TOCs, chunks) up to the moment the container exits.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from rootfs import python_rootfs_tar
from shaping import ShapedLink, root_qdisc
import timeline

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work", "hello")
BIN = os.path.join(WORK, "bin")
GO = "/usr/lib/go-1.19/bin/go"
REPO = "py"

WORKLOADS = {
    "hi": "print(\"hi\")",
    # A dozen-plus stdlib modules that python3-minimal has (no json/asyncio/decimal/sqlite3 there).
    "heavy": ("import argparse, calendar, configparser, csv, datetime, email.parser, hashlib, inspect, ipaddress, "
              "logging, pathlib, pickle, platform, random, socket, ssl, subprocess, tempfile, typing, urllib.parse; "
              "print(\"hi\")"),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def sh(cmd, quiet=False, **kw):
    if not quiet:
        log("+ " + " ".join(cmd))
    return subprocess.run(cmd, check=True, **kw)


def out(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def wait_socket(path, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(path)
                s.close()
                return
            except OSError:
                pass
        time.sleep(0.02)
    raise RuntimeError(f"{path} did not appear")


# ----------------------------------------------------------------------------- clean-up

class Cleanup:
    """Processes, mounts below our directories and the tc qdisc: undone in reverse, always."""

    def __init__(self):
        self.procs = []
        self.dirs = []
        self.tc = False

    def start(self, cmd, logfile, **kw):
        f = open(logfile, "ab")
        p = subprocess.Popen(cmd, stdout=kw.pop("stdout", f), stderr=f, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, timeout=15):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def unmount_below(self, directory):
        with open("/proc/mounts") as f:
            targets = [line.split()[1] for line in f]
        for target in reversed(targets):
            target = target.replace("\\040", " ")
            if target == directory or target.startswith(directory + "/"):
                subprocess.run(["umount", "-l", target], stderr=subprocess.DEVNULL)

    def tc_on(self, rate, port):
        """Shape the client <-> delay proxy hop (Benchmarks/shaping.py)."""
        if root_qdisc() != "" and not root_qdisc().startswith("qdisc noqueue"):
            raise RuntimeError(f"lo already has a qdisc (someone else benchmarking?): {root_qdisc()}")
        self.tc = ShapedLink(port, rate, log=log, wait_seconds=0)
        self.tc.install()

    def tc_intact(self):
        """Whether our qdisc is still the one on lo (another user of the machine may replace it)."""
        return bool(self.tc) and self.tc.intact()

    def tc_off(self):
        if self.tc:
            self.tc.remove()
            self.tc = False

    def all(self):
        self.tc_off()
        for p in reversed(list(self.procs)):
            try:
                self.stop(p, timeout=10)
            except Exception as e:  # keep cleaning
                log(f"stopping {p.args[0]}: {e}")
        for d in reversed(self.dirs):
            self.unmount_below(d)
            shutil.rmtree(d, ignore_errors=True)


# ----------------------------------------------------------------------------- building

def build(args):
    os.makedirs(BIN, exist_ok=True)
    if args.estargz:
        ours = args.estargz
    else:
        sh(["swift", "build", "-c", "release"], cwd=ROOT)  # estargz and the estargz-remote it hands over to
        ours = os.path.join(out(["swift", "build", "-c", "release", "--show-bin-path"], cwd=ROOT).strip(), "estargz")
    ref = os.path.join(BIN, "refsnapshotter")
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOCACHE=os.path.join(WORK, "gocache"))
    sh([GO, "build", "-o", ref, "./Benchmarks/refsnapshotter"], cwd=ROOT, env=env)
    return ours, ref


# ----------------------------------------------------------------------------- inputs

def rootfs_tar(args):
    """The debootstrapped python rootfs as a tar: --rootfs-tar or scripts/python-rootfs.sh's."""
    return python_rootfs_tar(args.rootfs_tar)


def sha256_file(path):
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def gzip_layout(args):
    """The legacy image: one gzip layer, as an OCI layout (--image-layout, or made here). Its config is
    what Docker Hub's python image has: PATH, and Cmd ["python3"] (the workloads give their own argv)."""
    for candidate in (args.image_layout, os.path.join(WORK, "pyimg-cmd")):
        if candidate and os.path.exists(os.path.join(candidate, "index.json")):
            return candidate
    tar = rootfs_tar(args)
    layout = os.path.join(WORK, "pyimg-cmd")
    tmp = layout + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    diff_id = sha256_file(tar)
    gz = os.path.join(tmp, "layer.tar.gz")
    sh(["sh", "-c", f"gzip -n -6 -c '{tar}' > '{gz}'"])
    layer = sha256_file(gz)
    os.rename(gz, os.path.join(blobs, layer))

    def blob(obj):
        data = json.dumps(obj).encode()
        import hashlib
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    config = blob({"architecture": "amd64", "os": "linux",
                   "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                              "Cmd": ["python3"]},
                   "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]}})
    manifest = blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
                     "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                 "digest": "sha256:" + layer, "size": os.path.getsize(os.path.join(blobs, layer))}]})
    with open(os.path.join(tmp, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [dict(manifest, mediaType="application/vnd.oci.image.manifest.v1+json",
                                                          annotations={"org.opencontainers.image.ref.name": "latest"})]}, f)
    with open(os.path.join(tmp, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    os.rename(tmp, layout)
    return layout


# ----------------------------------------------------------------------------- daemons

class Env:
    def __init__(self, args, cleanup, ours, ref):
        self.args, self.cleanup, self.ours, self.ref = args, cleanup, ours, ref
        self.tmp = tempfile.mkdtemp(prefix="hellobench-", dir=args.tmp)
        cleanup.dirs.append(self.tmp)
        self.registry_port = None
        self.proxy_port = None
        self.proxy = None
        self.proxy_out = os.path.join(self.tmp, "proxy.out")
        self.counter = 0
        self.events = os.path.join(self.tmp, "proxy-events.jsonl")
        self.started = time.strftime("%Y%m%d-%H%M%S")

    def start_registry(self, storage):
        self.registry_port = free_port()
        config = os.path.join(self.tmp, "registry.yml")
        with open(config, "w") as f:
            f.write(f"""version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: 127.0.0.1:{self.registry_port}
""")
        self.cleanup.start(["docker-registry", "serve", config], os.path.join(self.tmp, "registry.log"))
        wait_port(self.registry_port)
        self.proxy_port = free_port()
        self.proxy = self.cleanup.start(
            [sys.executable, os.path.join(HERE, "delay_proxy.py"), str(self.proxy_port),
             f"127.0.0.1:{self.registry_port}", "--delay-ms", str(self.args.delay_ms)]
            + (["--events", self.events] if self.args.timeline else []),
            os.path.join(self.tmp, "proxy.log"), stdout=open(self.proxy_out, "wb"))
        wait_port(self.proxy_port)

    def proxy_bytes(self):
        """Bytes the registry sent through the proxy so far."""
        with open(self.proxy_out) as f:
            before = sum(1 for line in f if line.startswith("bytes "))
        self.proxy.send_signal(signal.SIGUSR1)
        deadline = time.time() + 5
        while time.time() < deadline:
            with open(self.proxy_out) as f:
                lines = [line for line in f if line.startswith("bytes ")]
            if len(lines) > before:
                fields = dict(kv.split("=") for kv in lines[-1].split()[1:])
                return int(fields["down"]), int(fields["requests"])
            time.sleep(0.01)
        raise RuntimeError("delay proxy did not report")

    def ours_tag(self, tag):
        """Our images' tags name their chunk size when it is not the converter's default (4 MiB)."""
        return tag if self.args.ours_chunk_kib == 4096 else f"{tag}-{self.args.ours_chunk_kib}k"

    def direct(self, tag):
        return f"127.0.0.1:{self.registry_port}/{REPO}:{tag}"

    def proxied(self, tag):
        return f"127.0.0.1:{self.proxy_port}/{REPO}:{tag}"


class Containerd:
    """containerd (+ one snapshotter) in a fresh directory."""

    def __init__(self, env, name, snapshotter=None):
        self.env = env
        self.dir = os.path.join(env.tmp, name)
        os.makedirs(self.dir)
        self.sock = os.path.join(self.dir, "containerd.sock")
        self.snapshotter = snapshotter
        self.procs = []
        plugin = ""
        if snapshotter == "estargz":
            plugin = f'[proxy_plugins.estargz]\n  type = "snapshot"\n  address = "{self.dir}/snapshotter.sock"\n'
        elif snapshotter == "stargz":
            plugin = f'[proxy_plugins.stargz]\n  type = "snapshot"\n  address = "{self.dir}/snapshotter.sock"\n'
        with open(os.path.join(self.dir, "config.toml"), "w") as f:
            f.write(f"""version = 2
root = "{self.dir}/root"
state = "{self.dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
{plugin}""")

    def start(self):
        c = self.env.cleanup
        if self.snapshotter == "estargz":
            config = ["--config", self.env.args.ours_config] if self.env.args.ours_config else []
            self.procs.append(c.start([self.env.ours, "snapshotter", "--root", self.dir + "/snapshotter",
                                       "--address", self.dir + "/snapshotter.sock"] + config, self.dir + "/snapshotter.log"))
        elif self.snapshotter == "stargz":
            self.procs.append(c.start([self.env.ref, "--root", self.dir + "/snapshotter",
                                       "--address", self.dir + "/snapshotter.sock"], self.dir + "/snapshotter.log"))
        if self.snapshotter:
            wait_socket(self.dir + "/snapshotter.sock")
        self.procs.append(c.start(["containerd", "--config", self.dir + "/config.toml"], self.dir + "/containerd.log"))
        wait_socket(self.sock)
        deadline = time.time() + 20
        while subprocess.run(["ctr", "--address", self.sock, "version"], capture_output=True).returncode != 0:
            if time.time() > deadline:
                raise RuntimeError("containerd did not answer")
            time.sleep(0.05)

    def ctr(self, args, tool="ctr", capture=False):
        cmd = [tool, "--address", self.sock, "--namespace", "bench"] + args
        if capture:
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-2000:]}")
            return r.stdout
        sh(cmd, quiet=True, stdout=subprocess.DEVNULL)

    def stop(self):
        for p in reversed(self.procs):
            self.env.cleanup.stop(p)
        self.env.cleanup.unmount_below(self.dir)
        if self.env.args.keep_logs:
            logs = os.path.join(WORK, "logs", os.path.basename(self.dir))
            shutil.rmtree(logs, ignore_errors=True)
            os.makedirs(logs)
            for name in ("containerd.log", "snapshotter.log"):
                if os.path.exists(os.path.join(self.dir, name)):
                    shutil.copy(os.path.join(self.dir, name), logs)
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------------- images

def make_images(env, layout, workloads, storage, reuse):
    """Pushes the legacy image, the four eStargz variants and the four zstd:chunked ones (per workload
    for the optimized ones). With `reuse`, tags already in the registry's storage are kept."""
    def wanted(tag):
        present = os.path.exists(os.path.join(storage, "docker/registry/v2/repositories", REPO, "_manifests/tags", tag))
        if present and reuse:
            log(f"reusing {REPO}:{tag}")
        return not (present and reuse)

    if wanted("gzip"):
        sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "oci:" + layout + ":latest", "docker://" + env.direct("gzip")])
    chunk = ["--chunk-size", str(env.args.ours_chunk_kib << 10)]
    formats = [("esgz", [])] + ([] if env.args.no_zstd else [("zstd", ["--zstdchunked"])])
    for name, flag in formats:
        if wanted(env.ours_tag(f"ours-{name}")):
            sh([env.ours, "image", "convert", "oci:" + layout + ":latest", env.direct(env.ours_tag(f"ours-{name}"))] + chunk + flag)
        for w in workloads:
            opt = "ours-opt-" + w if name == "esgz" else f"ours-{name}-opt-{w}"
            if wanted(env.ours_tag(opt)):
                sh([env.ours, "image", "optimize", "oci:" + layout + ":latest", env.direct(env.ours_tag(opt)),
                    "--period", "60"] + chunk + flag + ["--", "/usr/bin/python3", "-c", WORKLOADS[w]])
    ctr_remote_tags = [t for t in ["ctrr-esgz"] + ["ctrr-opt-" + w for w in workloads] if wanted(t)]
    if not env.args.no_zstd:
        ctr_remote_tags += [t for t in ["ctrr-zstd"] + ["ctrr-zstd-opt-" + w for w in workloads] if wanted(t)]
    if not ctr_remote_tags:
        return
    # ctr-remote works on containerd's content store.
    prep = Containerd(env, "prep")
    prep.start()
    try:
        prep.ctr(["images", "pull", "--plain-http", env.direct("gzip")])
        for name, flag in (("esgz", "--estargz"), ("zstd", "--zstdchunked")):
            plain, opt = f"ctrr-{name}", (lambda w: "ctrr-opt-" + w if name == "esgz" else f"ctrr-{name}-opt-{w}")
            if plain in ctr_remote_tags:
                prep.ctr(["image", "convert", flag, "--oci", env.direct("gzip"), env.direct(plain)], tool="ctr-remote")
                prep.ctr(["images", "push", "--plain-http", env.direct(plain)])
            for w in workloads:
                if opt(w) in ctr_remote_tags:
                    prep.ctr(["image", "optimize", "--oci", "--period", "60"] + ([] if name == "esgz" else [flag]) + ["--args",
                              json.dumps(["/usr/bin/python3", "-c", WORKLOADS[w]]), env.direct("gzip"), env.direct(opt(w))],
                             tool="ctr-remote")
                    prep.ctr(["images", "push", "--plain-http", env.direct(opt(w))])
    finally:
        prep.stop()


# ----------------------------------------------------------------------------- one cold start

def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def cold_start(env, snapshotter, tag, workload, n):
    """Fresh daemons, dropped caches; pull then run. Returns the measurements of one run."""
    cd = Containerd(env, f"run{n}", None if snapshotter == "overlayfs" else snapshotter)
    try:
        drop_caches()
        cd.start()
        ref = env.proxied(tag)
        b0, q0 = env.proxy_bytes()
        t0 = time.monotonic()
        w0 = time.time()
        if snapshotter == "overlayfs":
            cd.ctr(["images", "pull", "--plain-http", ref])
        else:
            cd.ctr(["image", "rpull", "--plain-http", "--snapshotter", snapshotter, ref], tool="ctr-remote")
        t1 = time.monotonic()
        w1 = time.time()
        b1, _ = env.proxy_bytes()
        args = ["run", "--rm"] + ([] if snapshotter == "overlayfs" else ["--snapshotter", snapshotter])
        output = cd.ctr(args + [ref, f"c{n}", "/usr/bin/python3", "-c", WORKLOADS[workload]], capture=True)
        t2 = time.monotonic()
        w2 = time.time()
        b2, q2 = env.proxy_bytes()
        if output.strip() != "hi":
            raise RuntimeError(f"unexpected output {output!r}")
        if env.args.timeline:
            directory = os.path.join(WORK, "timelines", env.started)
            os.makedirs(directory, exist_ok=True)
            name = f"{n:03d}-{workload}-{snapshotter}-{tag}.txt"
            with open(os.path.join(directory, name), "w") as f:
                f.write(timeline.render(env.events, w0, w2, [("pulled, ctr run starts", w1), ("container exited", w2)]) + "\n")
        return {"pull": t1 - t0, "run": t2 - t1, "total": t2 - t0, "pull_bytes": b1 - b0, "bytes": b2 - b0,
                "requests": q2 - q0}
    finally:
        cd.stop()


# ----------------------------------------------------------------------------- main

CONFIGS = [
    # (label, snapshotter, image tag; "{w}" is the workload)
    ("legacy gzip, overlayfs (full pull)", "overlayfs", "gzip"),
    ("reference, ctr-remote eStargz", "stargz", "ctrr-esgz"),
    ("reference, ctr-remote optimized", "stargz", "ctrr-opt-{w}"),
    ("reference, our eStargz", "stargz", "ours-esgz"),
    ("reference, our optimized", "stargz", "ours-opt-{w}"),
    ("ours, ctr-remote eStargz", "estargz", "ctrr-esgz"),
    ("ours, ctr-remote optimized", "estargz", "ctrr-opt-{w}"),
    ("ours, our eStargz", "estargz", "ours-esgz"),
    ("ours, our optimized", "estargz", "ours-opt-{w}"),
    ("reference, ctr-remote zstd:chunked", "stargz", "ctrr-zstd"),
    ("reference, ctr-remote zstd:chunked optimized", "stargz", "ctrr-zstd-opt-{w}"),
    ("reference, our zstd:chunked", "stargz", "ours-zstd"),
    ("reference, our zstd:chunked optimized", "stargz", "ours-zstd-opt-{w}"),
    ("ours, ctr-remote zstd:chunked", "estargz", "ctrr-zstd"),
    ("ours, ctr-remote zstd:chunked optimized", "estargz", "ctrr-zstd-opt-{w}"),
    ("ours, our zstd:chunked", "estargz", "ours-zstd"),
    ("ours, our zstd:chunked optimized", "estargz", "ours-zstd-opt-{w}"),
]


def fmt_s(x):
    return f"{x:.2f} s"


def fmt_b(x):
    return f"{x / 1e6:,.1f} MB"


def table(results, workloads):
    lines = ["| workload | snapshotter, image | pull | create+run | total | fetched | requests | ours / reference, same image |",
             "|---|---|---|---|---|---|---|---|"]
    for w in workloads:
        med = {}
        for label, _, _ in CONFIGS:
            runs = results.get(f"{w}/{label}")
            if runs:
                med[label] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        for label, snap, tag in CONFIGS:
            m = med.get(label)
            if not m:
                continue
            versus = ""
            if label.startswith("ours, "):
                other = med.get("reference, " + label[len("ours, "):])
                if other:
                    versus = f"**{m['total'] / other['total']:.2f}x** time, {m['bytes'] / max(other['bytes'], 1):.2f}x bytes"
            lines.append(f"| {w} | {label} | {fmt_s(m['pull'])} | {fmt_s(m['run'])} | {fmt_s(m['total'])} | "
                         f"{fmt_b(m['bytes'])} | {m['requests']:.0f} | {versus} |")
        for kind in ("", " zstd:chunked"):
            own_ref, own_ours = med.get(f"reference, ctr-remote{kind} optimized"), med.get(f"ours, our{kind} optimized")
            if own_ref and own_ours:
                lines.append(f"| {w} | **each side's own{kind} optimized image** (ours+ours / reference+ctr-remote) | | | | | | "
                             f"**{own_ours['total'] / own_ref['total']:.2f}x** time, "
                             f"{own_ours['bytes'] / max(own_ref['bytes'], 1):.2f}x bytes |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every configuration (alternating)")
    ap.add_argument("--quick", action="store_true", help="one repetition")
    ap.add_argument("--workloads", default="hi,heavy")
    ap.add_argument("--only", help="'|'-separated substrings: run only configurations whose label contains one")
    ap.add_argument("--delay-ms", type=float, default=10.0)
    ap.add_argument("--rate", default="100mbit")
    ap.add_argument("--no-tc", action="store_true", help="do not shape lo (for debugging the harness)")
    ap.add_argument("--rootfs-tar")
    ap.add_argument("--image-layout", help="OCI layout of the gzip python image")
    ap.add_argument("--estargz", help="use this estargz binary (with its estargz-remote beside it) instead of building the release one")
    ap.add_argument("--reuse-images", action="store_true",
                    help="keep the images already in the last run's registry storage (Benchmarks/work/hello/registry)")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--ours-chunk-kib", type=int, default=4096,
                    help="chunk size of our converted and optimized images (KiB; default 4096, the converter's default)")
    ap.add_argument("--keep-logs", action="store_true", help="copy each run's daemon logs to Benchmarks/work/hello/logs/")
    ap.add_argument("--timeline", action="store_true",
                    help="write every cold start's request timeline to Benchmarks/work/hello/timelines/STARTED/ (timeline.py)")
    ap.add_argument("--no-zstd", action="store_true", help="leave the zstd:chunked images and configurations out")
    ap.add_argument("--ours-config", help="a config file for `estargz snapshotter --config` (default: none, the defaults)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("hellobench needs root (containerd, FUSE, tc, drop_caches)")
    reps = 1 if args.quick else args.reps
    workloads = args.workloads.split(",")
    os.makedirs(WORK, exist_ok=True)

    cleanup = Cleanup()

    def on_signal(number, frame):
        raise KeyboardInterrupt(f"signal {number}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    results = {}
    try:
        ours, ref = build(args)
        layout = gzip_layout(args)
        env = Env(args, cleanup, ours, ref)
        storage = os.path.join(WORK, "registry")
        if not args.reuse_images:
            shutil.rmtree(storage, ignore_errors=True)
        os.makedirs(storage, exist_ok=True)
        env.start_registry(storage)
        make_images(env, layout, workloads, storage, args.reuse_images)
        load0 = os.getloadavg()[0]
        started = datetime.datetime.now(datetime.timezone.utc)
        if not args.no_tc:
            cleanup.tc_on(args.rate, env.proxy_port)
        configs = [c for c in CONFIGS if not args.only or any(s and s in c[0] for s in args.only.split("|"))]
        if args.no_zstd:
            configs = [c for c in configs if "zstd" not in c[0]]
        n = 0
        for rep in range(reps):
            for w in workloads:
                order = configs if rep % 2 == 0 else list(reversed(configs))
                for label, snap, tag in order:
                    n += 1
                    tag = tag.format(w=w)
                    for attempt in range(3):
                        r = cold_start(env, snap, env.ours_tag(tag) if tag.startswith("ours-") else tag, w, n)
                        if args.no_tc or cleanup.tc_intact():
                            break
                        log("the tc qdisc on lo changed during this run (someone else?): measuring it again")
                        cleanup.tc.active = False  # not ours any more: never remove it
                        cleanup.tc = False
                        time.sleep(5)
                        cleanup.tc_on(args.rate, env.proxy_port)
                    else:
                        raise RuntimeError("lo's qdisc keeps changing under us")
                    log(f"rep {rep + 1} {w:5} {label:38} pull {r['pull']:6.2f} s  run {r['run']:6.2f} s  "
                        f"total {r['total']:6.2f} s  {r['bytes']:>11,} B in {r['requests']} requests")
                    results.setdefault(f"{w}/{label}", []).append(r)
        cleanup.tc_off()
        load1 = os.getloadavg()[0]
        header = (f"{started:%Y-%m-%d %H:%M} UTC on {platform.node()}, {os.cpu_count()} cores, load average at "
                  f"start/end {load0:.1f}/{load1:.1f}; medians of {reps} alternating cold starts; "
                  f"lo shaped {'off' if args.no_tc else args.rate} + {args.delay_ms:g} ms each way.")
        text = header + "\n\n" + table(results, workloads) + "\n"
        print(text)
        with open(os.path.join(WORK, "results.md"), "w") as f:
            f.write(text)
        with open(os.path.join(WORK, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
    finally:
        cleanup.all()
        if results:
            with open(os.path.join(WORK, "results-partial.json"), "w") as f:
                json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
