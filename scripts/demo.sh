#!/usr/bin/env bash
# The main job, end to end on this machine: a local registry, a small image pushed to it,
# converted to eStargz, mounted lazily, one file read — and how little of the layer that fetched.
# Then the local commands: convert a tar, read a file back, verify every chunk.
# Needs root (FUSE mount) and the packages scripts/setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${DEMO_CONFIG:-release}  # DEMO_CONFIG=debug reuses a `swift build` tree
# estargz and estargz-remote (it runs mount, image, snapshotter); the build's output only if it fails.
swift build -c "$config" >/tmp/estargz-demo-build.log 2>&1 || { cat /tmp/estargz-demo-build.log; exit 1; }
bin=$PWD/.build/$config/estargz
work=$(mktemp -d)
registry_pid="" mount_pid=""
cleanup() {
  if [ -n "$mount_pid" ]; then kill -TERM "$mount_pid" 2>/dev/null || true; wait "$mount_pid" 2>/dev/null || true; fi
  if [ -n "$registry_pid" ]; then kill -TERM "$registry_pid" 2>/dev/null || true; wait "$registry_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A generated rootfs-like tree: some text, some binaries, a large file spanning chunks.
mkdir -p "$work/root/etc" "$work/root/usr/bin" "$work/root/usr/share/doc/demo"
echo "PRETTY_NAME=\"swift-estargz demo\"" > "$work/root/etc/os-release"
for i in $(seq 1 200); do echo "line $i of a small text file" > "$work/root/usr/share/doc/demo/file$i.txt"; done
cp /bin/ls /bin/cat "$work/root/usr/bin/"
head -c $((12 * 1024 * 1024)) /dev/urandom > "$work/root/usr/bin/big.bin"
ln -s ../usr/bin/ls "$work/root/etc/ls-link"
tar -C "$work/root" --numeric-owner -cf "$work/layer.tar" .

echo "== start a local registry (docker-registry on 127.0.0.1, temporary storage)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry-data
http:
  addr: 127.0.0.1:$port
EOF
/usr/bin/docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 1 100); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  sleep 0.1
done
host=127.0.0.1:$port
echo "registry at $host"

echo "== push a small image (an OCI layout of the tree above, one gzip layer) with skopeo"
gzip -c "$work/layer.tar" > "$work/layer.tar.gz"
python3 - "$work/layout" "$work/layer.tar" "$work/layer.tar.gz" <<'EOF'
import hashlib, json, os, platform, sys
layout, tar, gz = sys.argv[1:]
os.makedirs(layout + "/blobs/sha256")
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    open(f"{layout}/blobs/sha256/{digest}", "wb").write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
diff_id = "sha256:" + hashlib.sha256(open(tar, "rb").read()).hexdigest()
config = json.dumps({"architecture": arch, "os": "linux", "config": {"Env": ["PATH=/usr/bin"]},
                     "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(open(gz, "rb").read())}]}).encode()
index = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(manifest),
                                            "annotations": {"org.opencontainers.image.ref.name": "demo"}}]}
json.dump(index, open(layout + "/index.json", "w"))
open(layout + "/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
EOF
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$work/layout:demo" "docker://$host/demo:latest"
echo "pushed $host/demo:latest ($(du -h "$work/layer.tar.gz" | cut -f1) gzip layer)"

echo "== convert it to eStargz in the registry"
"$bin" image convert --quiet "$host/demo:latest" "$host/demo:esgz"

echo "== mount $host/demo:esgz lazily and read one file"
mkdir "$work/mnt"
"$bin" mount --no-prefetch --stats "$work/stats.json" "$host/demo:esgz" "$work/mnt" &
mount_pid=$!
for _ in $(seq 1 200); do [ -e "$work/mnt/.stargz-snapshotter/stats" ] && break; sleep 0.1; done
ls -l "$work/mnt/etc"
cat "$work/mnt/etc/os-release"
kill -TERM "$mount_pid"; wait "$mount_pid" || true; mount_pid=""
python3 - "$work/stats.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
fetched, blob = s["registryBytesFetched"], s["registryBlobBytes"]
print(f"fetched {fetched} of the layer's {blob} bytes ({100 * fetched / blob:.1f}%) "
      f"in {s['registryRequests']} range requests: the footer, the TOC and the chunks of etc/os-release")
EOF
kill -TERM "$registry_pid"; wait "$registry_pid" 2>/dev/null || true; registry_pid=""
echo "registry stopped, unmounted"

echo "== local: convert $(du -h "$work/layer.tar" | cut -f1) tar to eStargz"
time "$bin" convert "$work/layer.tar" "$work/layer.esgz" --json | tee "$work/result.json"
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tocDigest"])' "$work/result.json")

echo "== list (first entries)"
"$bin" ls "$work/layer.esgz" --long --toc-digest "$digest" | head -8

echo "== read /etc/os-release lazily"
"$bin" cat "$work/layer.esgz" /etc/os-release --toc-digest "$digest"

echo "== verify every chunk"
time "$bin" verify "$work/layer.esgz" --toc-digest "$digest"
