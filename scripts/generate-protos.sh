#!/usr/bin/env bash
# Regenerates the Swift code for the containerd APIs the snapshotter serves and `estargz pull`
# calls (snapshots, content, images, leases, diff) from the .proto files Debian ships in
# golang-github-containerd-containerd-dev, and, with CRI_API_PROTO set, the Kubernetes CRI API
# (runtime.v1) client the tests use, into Tests/SnapshotterTests/CRI. Run once when an API changes; the output is committed so builds never need
# protoc or its plugins.
#   PROTOC_GEN_SWIFT=... PROTOC_GEN_GRPC_SWIFT=... [CRI_API_PROTO=.../api.proto] scripts/generate-protos.sh
# The plugins come from swift-protobuf (protoc-gen-swift) and grpc-swift-protobuf (protoc-gen-grpc-swift-2):
#   swift build --product protoc-gen-grpc-swift-2 && swift build --product protoc-gen-swift   (in a checkout of grpc-swift-protobuf)
# CRI_API_PROTO is pkg/apis/runtime/v1/api.proto of github.com/kubernetes/cri-api at v0.25.0 (the
# version containerd 1.6 serves; Debian ships no cri-api source): `git show v0.25.0:pkg/apis/runtime/v1/api.proto`.
set -euo pipefail
cd "$(dirname "$0")/.."
gocode=/usr/share/gocode/src
api=github.com/containerd/containerd/api
out=Sources/Snapshotter/Generated
mkdir -p "$out"
plugins=(--plugin=protoc-gen-swift="${PROTOC_GEN_SWIFT:?path to protoc-gen-swift}"
         --plugin=protoc-gen-grpc-swift="${PROTOC_GEN_GRPC_SWIFT:?path to protoc-gen-grpc-swift-2}")
# The snapshots service is served (Server=true) and called; the others are only called.
protoc "${plugins[@]}" \
  -I "$gocode" -I "$gocode/github.com/gogo/protobuf" -I /usr/include \
  --swift_out="$out" --swift_opt=Visibility=Internal,FileNaming=DropPath \
  --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Internal,Server=true,Client=true,FileNaming=DropPath \
  $api/services/snapshots/v1/snapshots.proto \
  $api/types/mount.proto
protoc "${plugins[@]}" \
  -I "$gocode" -I "$gocode/github.com/gogo/protobuf" -I /usr/include \
  --swift_out="$out" --swift_opt=Visibility=Internal,FileNaming=DropPath \
  --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Internal,Server=false,Client=true,FileNaming=DropPath \
  $api/services/content/v1/content.proto \
  $api/services/images/v1/images.proto \
  $api/services/leases/v1/leases.proto \
  $api/services/diff/v1/diff.proto \
  $api/types/descriptor.proto
if [ -n "${CRI_API_PROTO:-}" ]; then
  # Copied under a name of its own (api.proto says nothing); its gogoproto import is in $gocode.
  # Only the tests use the CRI client (a kubelet's part): it is built with them, not with the package.
  criOut=Tests/SnapshotterTests/CRI
  mkdir -p "$criOut"
  cri=$(mktemp -d)
  trap 'rm -rf "$cri"' EXIT
  cp "$CRI_API_PROTO" "$cri/cri-api.proto"
  protoc "${plugins[@]}" \
    -I "$cri" -I "$gocode" -I /usr/include \
    --swift_out="$criOut" --swift_opt=Visibility=Internal,FileNaming=DropPath \
    --grpc-swift_out="$criOut" --grpc-swift_opt=Visibility=Internal,Server=false,Client=true,FileNaming=DropPath \
    cri-api.proto
  sed -i '/gogoproto/d' "$criOut"/*.swift
fi
# The weak gogoproto import only carries Go code-generation options.
sed -i '/gogoproto/d' "$out"/*.swift
# Files without a service have an empty gRPC file: not needed.
rm -f "$out/mount.grpc.swift" "$out/descriptor.grpc.swift"
