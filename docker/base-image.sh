#!/usr/bin/env bash
# Build a Debian bookworm base image locally (debootstrap + `podman import`) for hosts
# that reach Debian's package mirror but no container registry. Bookworm ships Python
# 3.11, the version the project pins; apt in the image also sees bookworm's updates and
# security suites. Usage: docker/base-image.sh [TAG] [MIRROR] [SECURITY_MIRROR]
set -euo pipefail
tag="${1:-localhost/lethe-base:bookworm}"
mirror="${2:-http://deb.debian.org/debian}"
security="${3:-http://deb.debian.org/debian-security}"
if podman image exists "$tag"; then
  echo "base image $tag exists"; exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm into $root (a few minutes) …"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
cat > "$root/etc/apt/sources.list" <<LIST
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${security:-http://deb.debian.org/debian-security} bookworm-security main
LIST
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["/bin/bash"]' - "$tag"
rm -f "$root.log"
echo "base image $tag imported"
