#!/usr/bin/env bash
# Regenerates the Swift code for containerd's snapshots API (containerd.services.snapshots.v1)
# from the .proto files Debian ships in golang-github-containerd-containerd-dev. Run once when the
# API changes; the output is committed so builds never need protoc or its plugins.
#   PROTOC_GEN_SWIFT=... PROTOC_GEN_GRPC_SWIFT=... scripts/generate-protos.sh
# The plugins come from swift-protobuf (protoc-gen-swift) and grpc-swift-protobuf (protoc-gen-grpc-swift-2).
set -euo pipefail
cd "$(dirname "$0")/.."
gocode=/usr/share/gocode/src
out=Sources/Snapshotter/Generated
mkdir -p "$out"
protoc \
  --plugin=protoc-gen-swift="${PROTOC_GEN_SWIFT:?path to protoc-gen-swift}" \
  --plugin=protoc-gen-grpc-swift="${PROTOC_GEN_GRPC_SWIFT:?path to protoc-gen-grpc-swift-2}" \
  -I "$gocode" -I "$gocode/github.com/gogo/protobuf" -I /usr/include \
  --swift_out="$out" --swift_opt=Visibility=Internal,FileNaming=DropPath \
  --grpc-swift_out="$out" --grpc-swift_opt=Visibility=Internal,Server=true,Client=true,FileNaming=DropPath \
  github.com/containerd/containerd/api/services/snapshots/v1/snapshots.proto \
  github.com/containerd/containerd/api/types/mount.proto
# The weak gogoproto import only carries Go code-generation options.
sed -i '/gogoproto/d' "$out"/*.swift
# mount.proto has no service: its (empty) gRPC file is not needed.
rm -f "$out/mount.grpc.swift"
