#!/usr/bin/env bash
# Make the Containerfile's base image, docker.io/library/debian:bookworm-slim, on a machine that
# cannot pull it: debootstrap a minbase Debian bookworm from the Debian mirror, slim it as the
# official image is slimmed (no docs, man pages or apt lists), and commit it with buildah under
# the official name, so `buildah bud --pull-never` builds on it unchanged.
set -euo pipefail
name=${1:-docker.io/library/debian:bookworm-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# buildah picks its storage driver (overlay where the kernel allows); STORAGE_DRIVER=vfs works
# everywhere, slower. The flag, not the variable: buildah 1.28 reads no variable for it.
buildah() { command buildah ${STORAGE_DRIVER:+--storage-driver "$STORAGE_DRIVER"} "$@"; }

if buildah inspect --type image "$name" >/dev/null 2>&1; then
  echo "== base $name: already here ($(buildah images --noheading --format '{{.Size}}' "$name"))"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs

echo "== base 1/3: debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" \
  | awk '/^I: (Retrieving|Validating|Extracting|Installing|Configuring|Unpacking) / {n++; if (n % 20 == 0) printf "   %s\n", $0; next} {print "   " $0}'

echo "== base 2/3: slim it (docs, man pages, caches), add security updates to the sources"
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
CFG
find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$rootfs"/usr/share/{man,info,locale,lintian,linda}/* "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*
rm -f "$rootfs/etc/apt/sources.list"
cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

echo "== base 3/3: commit as $name"
ctr=$(buildah from scratch)
mnt=$(buildah mount "$ctr")
cp -a "$rootfs/." "$mnt/"
buildah umount "$ctr" >/dev/null
buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --cmd bash --label "org.opencontainers.image.description=local debootstrap of Debian bookworm (minbase, slimmed)" "$ctr"
buildah commit --quiet --rm "$ctr" "$name" >/dev/null
echo "   $name: $(buildah images --noheading --format '{{.Size}}' "$name")"
