#!/usr/bin/env bash
# Build the registry-free base image of the container lab from Debian's packages.
#
#   docker/base-image.sh [--force]
#
# No image can be pulled on the lab's machines, so the base is made here: debootstrap
# (minbase variant, bookworm) into a scratch folder with the tools the lab's containers need,
# then `tar | docker import`. The tag (default teredo-lab/base:bookworm, override with
# BASE_IMAGE) is reused when it exists already: the script is idempotent and costs nothing the
# second time. --force rebuilds it.
#
# The mirror is the one apt uses on this host (first bookworm/main source in
# /etc/apt/sources.list and /etc/apt/sources.list.d/*.{list,sources}); DEBIAN_MIRROR overrides.
#
# Why a tag of our own rather than `debian:bookworm-slim`: the image carries extra packages
# (iproute2, nftables, miredo, ...); naming it like Debian's official slim image would make a
# real one (pulled on a machine with a registry) and ours interchangeable, which they are not.
set -euo pipefail

TAG=${BASE_IMAGE:-teredo-lab/base:bookworm}
SUITE=bookworm
# What the containers run besides our binaries:
#   iproute2        addresses and routes set by the entrypoints
#   nftables        the NAT routers' rules (shared/NAT.md section 9)
#   conntrack       flushing / listing NAT state in the routers
#   iputils-ping    ping / ping -6 for checks by hand
#   procps          ps, sysctl
#   socat           the native IPv6 host's UDP echo
#   jq              the runner reads the JSON result files
#   miredo          the Miredo client of the `miredo` profile, and the Miredo relay
#                   (TEREDO_LAB_RELAY=miredo; debootstrap resolves its `udev | makedev`
#                   pre-dependency with udev, which never runs here)
#   miredo-server   Miredo's Teredo server (TEREDO_LAB_SERVER=miredo)
#   tcpdump         looking at the wire inside any container
PACKAGES=iproute2,nftables,conntrack,iputils-ping,procps,socat,jq,miredo,miredo-server,tcpdump

force=false
case "${1:-}" in
  --force) force=true ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }

# The import message names the packages: an image built from an older list is rebuilt.
MESSAGE="teredo-lab base: debootstrap --variant=minbase $SUITE + $PACKAGES"
if [ "$force" = false ] && docker image inspect "$TAG" >/dev/null 2>&1; then
  built_with=$(docker history --no-trunc --format '{{.Comment}}' "$TAG" | head -n 1)
  if [ "$built_with" = "$MESSAGE" ]; then
    echo "base image $TAG exists ($(size_of "$TAG")), not rebuilt (--force rebuilds it)"
    exit 0
  fi
  echo "base image $TAG was built with another package list (${built_with:-unknown}): rebuilding"
fi

if [ "$(id -u)" != 0 ]; then
  echo "base-image.sh: debootstrap needs root" >&2
  exit 1
fi

start=$(date +%s)

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "installing debootstrap from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends debootstrap ||
    { apt-get update && apt-get install -y --no-install-recommends debootstrap; }
fi

# The mirror apt uses here (DEBIAN_MIRROR overrides).
mirror=$("$(dirname "${BASH_SOURCE[0]}")/debian-mirror.sh" "$SUITE")
echo "building $TAG: debootstrap --variant=minbase $SUITE from $mirror"

rootfs=$(mktemp -d /var/tmp/teredo-lab-rootfs.XXXXXX)
cleanup() {
  # debootstrap's second stage mounts proc/sys inside the tree; never rm -rf through a mount.
  local m
  awk -v r="$rootfs" '$2 ~ "^" r "/" { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  if awk -v r="$rootfs" '$2 ~ "^" r "/" { found = 1 } END { exit !found }' /proc/mounts; then
    echo "base-image.sh: mounts left under $rootfs, not removing it" >&2
  else
    rm -rf --one-file-system "$rootfs"
  fi
}
trap cleanup EXIT

# Two stages so that a policy-rc.d is in place before any package is configured: miredo's
# postinst would otherwise try to start a Teredo client (pointing at a server on the
# Internet) in the build host's network namespace. The image keeps the policy, as Debian's
# official images do.
debootstrap --foreign --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror"
printf '#!/bin/sh\n# teredo-lab base image: never start daemons from package scripts\nexit 101\n' \
  >"$rootfs/usr/sbin/policy-rc.d"
chmod 755 "$rootfs/usr/sbin/policy-rc.d"
chroot "$rootfs" /debootstrap/debootstrap --second-stage

# Trim what a container does not need; Docker provides hostname, hosts and resolv.conf.
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
: >"$rootfs/etc/hostname"
: >"$rootfs/etc/resolv.conf"
echo "deb $mirror $SUITE main" >"$rootfs/etc/apt/sources.list"

tar --numeric-owner -C "$rootfs" -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "$MESSAGE" \
    - "$TAG" >/dev/null

echo "base image $TAG built in $(($(date +%s) - start)) s, $(size_of "$TAG")"
