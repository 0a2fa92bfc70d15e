#!/usr/bin/env bash
# The main job on a built-in default: generate a layer, convert it to eStargz,
# then read one file back lazily (only its chunks) and verify the whole blob.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release >/dev/null  # estargz and estargz-remote (it runs mount, image, snapshotter)
bin=.build/release/estargz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A generated rootfs-like tree: some text, some binaries, a large file spanning chunks.
mkdir -p "$work/root/etc" "$work/root/usr/bin" "$work/root/usr/share/doc/demo"
echo "PRETTY_NAME=\"swift-estargz demo\"" > "$work/root/etc/os-release"
for i in $(seq 1 200); do echo "line $i of a small text file" > "$work/root/usr/share/doc/demo/file$i.txt"; done
cp /bin/ls /bin/cat "$work/root/usr/bin/"
head -c $((12 * 1024 * 1024)) /dev/urandom > "$work/root/usr/bin/big.bin"
ln -s ../usr/bin/ls "$work/root/etc/ls-link"
tar -C "$work/root" --numeric-owner -cf "$work/layer.tar" .

echo "== convert $(du -h "$work/layer.tar" | cut -f1) tar to eStargz"
time "$bin" convert "$work/layer.tar" "$work/layer.esgz" --json | tee "$work/result.json"
digest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tocDigest"])' "$work/result.json")

echo "== list (first entries)"
"$bin" ls "$work/layer.esgz" --long --toc-digest "$digest" | head -8

echo "== read /etc/os-release lazily"
"$bin" cat "$work/layer.esgz" /etc/os-release --toc-digest "$digest"

echo "== verify every chunk"
time "$bin" verify "$work/layer.esgz" --toc-digest "$digest"
