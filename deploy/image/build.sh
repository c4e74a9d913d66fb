#!/usr/bin/env bash
# deploy/image/build.sh — builds seer's container image without a Docker
# daemon: buildah, FROM scratch, with
#   /usr/bin/seer                       the binary (-trimpath, built here)
#   /usr/lib/seer/libonnxruntime.so.1   ONNX Runtime (CPU), from the stack's cache
#   /lib…, /lib64/ld-linux-x86-64.so.2  the C and C++ runtime libraries both need
#   /etc/ssl/certs/ca-certificates.crt  CA certificates
#   /etc/passwd, /etc/group             the non-root user seer (65532)
#   /usr/share/seer/models/…            the example model packages
#   /var/lib/seer/{spool,work}, /tmp    writable by seer
# tagged localhost/seer:<git commit>[-dirty] and localhost/seer:dev, with
# the commit as a label and timestamps at 0 (the same tree gives the same
# image). The CycloneDX SBOM — every file, the Go modules and Debian
# packages with their licences — goes to .cache/image/sbom-<tag>.json.
#
# Storage: podman's and buildah's defaults; here (no overlay, no rlimits)
# SEER_IMAGE_STORAGE=vfs and deploy/image/containers.conf.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$repo/deploy/image/containers.conf}
storage=(--storage-driver "${SEER_IMAGE_STORAGE:-vfs}")
cache=${SEER_CACHE_DIR:-$repo/.cache}
ort=$cache/onnxruntime/libonnxruntime.so.1
[ -f "$ort" ] || { echo "image: $ort missing; run: deploy/local/stack.sh install" >&2; exit 1; }
tag=$(git describe --always --dirty --abbrev=12)
work=$cache/image
root=$work/root
rm -rf "$root" && mkdir -p "$root"
log() { printf '[image] %s\n' "$*" >&2; }

log "building seer ($tag)"
CGO_ENABLED=1 go build -trimpath -ldflags "-s -w" -o "$root/usr/bin/seer" ./cmd/seer

sources=$work/sources.txt
: >"$sources"
# add HOST_PATH IMAGE_PATH — copies a file (resolving links) and records
# where it came from for the SBOM.
add() {
  mkdir -p "$root$(dirname "$2")"
  cp -L "$1" "$root$2"
  echo "$2 $1" >>"$sources"
}
add "$ort" /usr/lib/seer/libonnxruntime.so.1
for lib in $( (ldd "$root/usr/bin/seer"; ldd "$ort") | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u); do
  add "$lib" "$lib"
done
add /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
mkdir -p "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nseer:x:65532:65532:seer:/var/lib/seer:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nseer:x:65532:\n' >"$root/etc/group"
for m in card-fraud card-fraud-1.1.0; do
  mkdir -p "$root/usr/share/seer/models/$m"
  cp deploy/examples/$m/model.onnx deploy/examples/$m/model.yaml deploy/examples/$m/examples.jsonl "$root/usr/share/seer/models/$m/"
done
mkdir -p "$root/var/lib/seer/spool" "$root/var/lib/seer/work" "$root/tmp"

log "SBOM"
ca_version=$(dpkg-query -W -f='${Version}' ca-certificates)
go run ./deploy/image/sbom -root "$root" -sources "$sources" -binary usr/bin/seer -name seer -version "$tag" -out "$work/sbom-$tag.json" \
  -component "onnxruntime@1.30.0|MIT|pkg:npm/onnxruntime-node@1.30.0|/usr/lib/seer/libonnxruntime.so.1" \
  -component "ca-certificates@$ca_version|MPL-2.0|pkg:deb/debian/ca-certificates@$ca_version|/etc/ssl/certs/ca-certificates.crt" >&2

log "assembling localhost/seer:$tag"
ctr=$(buildah "${storage[@]}" from scratch)
trap 'buildah "${storage[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah "${storage[@]}" copy "$ctr" "$root" / >/dev/null
buildah "${storage[@]}" copy --chown 65532:65532 "$ctr" "$root/var/lib/seer" /var/lib/seer >/dev/null
buildah "${storage[@]}" config --user 65532:65532 --workingdir /var/lib/seer/work \
  --env SEER_ONNXRUNTIME_LIB=/usr/lib/seer/libonnxruntime.so.1 \
  --entrypoint '["/usr/bin/seer"]' --cmd '["--help"]' \
  --label org.opencontainers.image.title=seer \
  --label org.opencontainers.image.revision="$tag" \
  --label org.opencontainers.image.source=https://github.com/seer-ml/seer "$ctr"
buildah "${storage[@]}" commit --quiet --timestamp 0 "$ctr" "localhost/seer:$tag" >/dev/null
buildah "${storage[@]}" tag "localhost/seer:$tag" localhost/seer:dev
log "built localhost/seer:$tag (also :dev); SBOM $work/sbom-$tag.json"
echo "localhost/seer:$tag"
