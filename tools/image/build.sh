#!/usr/bin/env bash
# `make image`: build the application image from the Containerfile and extract its SBOM.
# Docker or Podman with a daemon and a registry: used as is. Otherwise (these machines):
# buildah (chroot isolation; STORAGE_DRIVER=vfs where overlay is unavailable); BASE=local makes the
# debian:bookworm-slim base with debootstrap (tools/image/local-base.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
image=${IMAGE:?IMAGE=repository:tag}
base=${BASE:-registry}
version=${VERSION:?}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || revision="$revision-dirty"
source_url=${SOURCE_URL:-$(git config --get remote.origin.url 2>/dev/null || echo unknown)}
mkdir -p dist
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "SOURCE=$source_url"
      -f Containerfile -t "$image")
# A TLS-intercepting proxy in front of PyPI: hand its CA bundle to the build as a secret.
ca=${BUILD_CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-}}}
[[ -n $ca && -s $ca ]] && args+=(--secret "id=build_ca,src=$ca")
started=$(date +%s)

if [[ $base == registry ]] && command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  tool=docker
elif [[ $base == registry ]] && command -v podman >/dev/null; then
  tool=podman
elif command -v buildah >/dev/null; then
  tool=buildah
  export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
  buildah() { command buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} "$@"; }
else
  echo "make image: needs docker, podman or buildah (Debian: apt-get install buildah debootstrap)" >&2
  exit 1
fi

echo "== image: $image with $tool (base: $base)"
case $tool in
  docker|podman)
    "$tool" build "${args[@]}" .
    ctr=$("$tool" create "$image")
    "$tool" cp "$ctr:/app/sbom.cdx.json" dist/sbom.cdx.json
    "$tool" rm "$ctr" >/dev/null
    size=$("$tool" image inspect --format '{{.Size}}' "$image")
    ;;
  buildah)
    pull=()
    if [[ $base == local ]]; then
      tools/image/local-base.sh
      pull=(--pull-never)
    fi
    buildah bud --layers "${pull[@]}" "${args[@]}" .
    ctr=$(buildah from --pull-never "$image")
    mnt=$(buildah mount "$ctr")
    cp "$mnt/app/sbom.cdx.json" dist/sbom.cdx.json
    buildah umount "$ctr" >/dev/null
    buildah rm "$ctr" >/dev/null
    size=$(buildah images --noheading --format "{{.Size}}" "$image")
    ;;
esac
echo "== image: $image built in $(( $(date +%s) - started )) s, size $size; SBOM in dist/sbom.cdx.json"
