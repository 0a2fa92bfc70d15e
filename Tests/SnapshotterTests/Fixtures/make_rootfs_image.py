#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (for `ctr images import` or `tar -x` into a layout) whose
layer is a given rootfs tar, named docker.io/library/NAME:latest.
Usage: make_rootfs_image.py ROOTFS.tar OUT.tar NAME"""
import gzip, hashlib, io, json, shutil, sys, tarfile, tempfile, os

rootfs, out, name = sys.argv[1], sys.argv[2], sys.argv[3]

def digest_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()

work = tempfile.mkdtemp()
layer_gz = os.path.join(work, "layer.tar.gz")
with open(rootfs, "rb") as src, open(layer_gz, "wb") as raw:
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"]},
    "rootfs": {"type": "layers", "diff_ids": [digest_file(rootfs)]},
}).encode()
def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest_file(layer_gz),
                "size": os.path.getsize(layer_gz)}],
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
def add_bytes(tar, path, data):
    info = tarfile.TarInfo(path)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    tar.addfile(info, io.BytesIO(data))
with tarfile.open(out, "w") as t:
    add_bytes(t, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    add_bytes(t, "index.json", index)
    for blob in (config, manifest):
        add_bytes(t, "blobs/sha256/" + hashlib.sha256(blob).hexdigest(), blob)
    t.add(layer_gz, "blobs/sha256/" + digest_file(layer_gz)[7:])
shutil.rmtree(work)
