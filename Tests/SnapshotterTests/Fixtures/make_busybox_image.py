#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (for `ctr images import`) holding the host's static
busybox as /bin/busybox, named docker.io/library/NAME:latest.  With --data-layer a second layer
adds etc/second and 4 MiB of incompressible data/big that no test container reads (the part of an
image a lazy pull never fetches).  --cmd JSON sets the config's Cmd (default ["/bin/sh"]; a
pod sandbox image: ["/bin/busybox", "sleep", "3600"]).
With --data-files N, the first layer also holds data/f000 … (incompressible, 1 KiB to 512 KiB each, the
same bytes every run: seeded by the file's number), for load and fault tests to read and compare.
--config JSON: a JSON object for the image config's "config" (Entrypoint, Cmd, Env, WorkingDir, User);
with one the layer also has a user daemon (2:3) and etc/group (root 0, daemon 3, staff 50).
--padding MiB: incompressible bytes in /padding.bin, which no test workload reads (so lazy pulls show).
--program PATH: the host's dynamically linked program PATH in a layer of its own on top, as usr/bin/NAME,
and the libraries and loader it needs (as `ldd` finds them) in the first layer, under lib/x86_64-linux-gnu
and lib64: a program whose dependencies are all in the layer below.
Usage: make_busybox_image.py OUT.tar NAME [--data-layer] [--cmd JSON] [--data-files N] [--config JSON] [--padding MiB]
                             [--program PATH]"""
import gzip, hashlib, io, json, os, random, subprocess, sys, tarfile

out, name = sys.argv[1], sys.argv[2]
data_layer = "--data-layer" in sys.argv[3:]
data_files = int(sys.argv[sys.argv.index("--data-files") + 1]) if "--data-files" in sys.argv[3:] else 0
process_config = json.loads(sys.argv[sys.argv.index("--config") + 1]) if "--config" in sys.argv[3:] else None
padding_mib = int(sys.argv[sys.argv.index("--padding") + 1]) if "--padding" in sys.argv[3:] else 0
cmd = json.loads(sys.argv[sys.argv.index("--cmd") + 1]) if "--cmd" in sys.argv[3:] else ["/bin/sh"]
program = sys.argv[sys.argv.index("--program") + 1] if "--program" in sys.argv[3:] else None

def needed_files(path):
    """(path in the image, host file) of every library and the loader `ldd` lists for `path`."""
    files = []
    for line in subprocess.run(["ldd", path], check=True, capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        host = parts[2] if len(parts) >= 3 and parts[1] == "=>" else (parts[0] if parts and parts[0].startswith("/") else None)
        if not host:
            continue
        name = os.path.basename(parts[0] if parts[0].startswith("/") else parts[0])
        where = "lib64/" + name if parts[0].startswith("/lib64/") else "lib/x86_64-linux-gnu/" + name
        files.append((where, os.path.realpath(host)))
    return files

def add_bytes(tar, path, data, mode=0o644):
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
    tar.addfile(info, io.BytesIO(data))

def add_directories(tar, paths):
    for path in paths:
        info = tarfile.TarInfo(path)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
        tar.addfile(info)

layer_tar = io.BytesIO()
with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as t:
    add_directories(t, ("bin", "tmp", "proc", "dev", "sys", "etc") + (("lib", "lib/x86_64-linux-gnu", "lib64") if program else ()))
    add_bytes(t, "bin/busybox", open("/bin/busybox", "rb").read(), 0o755)
    for where, host in (needed_files(program) if program else []):
        add_bytes(t, where, open(host, "rb").read(), 0o755 if where.startswith("lib64/") else 0o644)
    add_bytes(t, "etc/message", b"hello from the layer\n")
    # runc looks the container's user up here (no etc/group: a runtime file may be missing).
    add_bytes(t, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
              + (b"daemon:x:2:3:daemon:/:/bin/sh\n" if process_config else b""))
    if process_config:
        add_bytes(t, "etc/group", b"root:x:0:\ndaemon:x:3:\nstaff:x:50:\n")
    # Incompressible bytes, so a flipped byte in its chunk is easy to place (corruption tests).
    add_bytes(t, "etc/random", random.Random(7).randbytes(256 * 1024))
    if padding_mib:
        add_bytes(t, "padding.bin", random.Random(11).randbytes(padding_mib << 20))
    for applet in ("sh", "echo", "cat", "ls"):
        info = tarfile.TarInfo("bin/" + applet)
        info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "busybox", 1_700_000_000
        t.addfile(info)
    if data_files:
        add_directories(t, ["data"])
    for i in range(data_files):
        rng = random.Random(1000 + i)
        add_bytes(t, "data/f%03d" % i, rng.randbytes(rng.randint(1024, 512 * 1024)))
layer = layer_tar.getvalue()
layer_gz = gzip.compress(layer, mtime=0)
layers = [(layer, layer_gz)]
if data_layer:
    data_tar = io.BytesIO()
    with tarfile.open(fileobj=data_tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        add_directories(t, ("etc", "data"))
        add_bytes(t, "etc/second", b"hello from the second layer\n")
        add_bytes(t, "data/big", random.Random(11).randbytes(4 << 20))
    data = data_tar.getvalue()
    layers.append((data, gzip.compress(data, mtime=0)))
if program:
    program_tar = io.BytesIO()
    with tarfile.open(fileobj=program_tar, mode="w", format=tarfile.PAX_FORMAT) as t:
        add_directories(t, ("usr", "usr/bin"))
        add_bytes(t, "usr/bin/" + os.path.basename(program), open(program, "rb").read(), 0o755)
    data = program_tar.getvalue()
    layers.append((data, gzip.compress(data, mtime=0)))

def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": process_config or {"Cmd": cmd, "Env": ["PATH=/bin"]},
    "rootfs": {"type": "layers", "diff_ids": [digest(tar) for tar, _ in layers]},
}).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(gz), "size": len(gz)}
               for _, gz in layers],
}).encode()
index = json.dumps({
    "schemaVersion": 2,
    "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(manifest), "size": len(manifest),
        "platform": {"architecture": "amd64", "os": "linux"},
        "annotations": {"io.containerd.image.name": f"docker.io/library/{name}:latest",
                        "org.opencontainers.image.ref.name": "latest"},
    }],
}).encode()
with tarfile.open(out, "w") as t:
    add_bytes(t, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    add_bytes(t, "index.json", index)
    for blob in [config, manifest] + [gz for _, gz in layers]:
        add_bytes(t, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)
