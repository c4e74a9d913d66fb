#!/usr/bin/env bash
# deploy/gpu/bundle.sh — packs what the GPU machine needs and cannot fetch:
# the CUDA build of ONNX Runtime (stack.sh install onnxruntime-gpu) and a
# seer binary, as one xz-compressed tar split into parts small enough to
# carry one per call of the device tool (64 MiB a call, repository
# included). The parts and SHA256SUMS go to .gpu/ (git-ignored);
# deploy/gpu/run-on-device.sh puts them back together there.
#
#   deploy/gpu/bundle.sh [PART_MIB]    (default 52: four parts, each with the
#                                     repository, under the 64 MiB a call)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${SEER_CACHE_DIR:-$repo/.cache}
part_mib=${1:-52}
"$repo/deploy/local/stack.sh" install onnxruntime-gpu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bundle/lib"
cp "$cache"/onnxruntime-gpu/*.so* "$cache/onnxruntime-gpu/SHA256SUMS" "$tmp/bundle/lib/"
echo "[gpu] building a stripped seer binary"
(cd "$repo" && CGO_ENABLED=1 go build -trimpath -ldflags="-s -w" -o "$tmp/bundle/seer" ./cmd/seer)
echo "[gpu] compressing (xz; about a minute)"
tar -C "$tmp/bundle" -cf - . | xz -T0 -6 >"$tmp/bundle.tar.xz"
rm -rf "$repo/.gpu" && mkdir -p "$repo/.gpu"
(cd "$tmp" && sha256sum bundle.tar.xz) >"$repo/.gpu/SHA256SUMS"
split -b "${part_mib}m" -d -a 1 "$tmp/bundle.tar.xz" "$repo/.gpu/bundle.tar.xz.part-"
ls -l "$repo/.gpu" | sed 's/^/[gpu] /'
echo "[gpu] carry .gpu/bundle.tar.xz.part-N one per device call (run-on-device.sh stash), then run-on-device.sh"
