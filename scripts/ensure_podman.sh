#!/usr/bin/env bash
# Make sure podman, podman's networking helpers and debootstrap exist for
# `make test-containers`. Idempotent: does nothing when every command is there. Installs
# the Debian packages when run as root; otherwise says what to run and fails.
set -euo pipefail

packages=(podman debootstrap uidmap slirp4netns passt fuse-overlayfs netavark aardvark-dns iptables runc)
missing=()
for cmd in podman debootstrap iptables runc; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
done
for helper in netavark aardvark-dns; do
  [ -x "/usr/lib/podman/$helper" ] || [ -x "/usr/libexec/podman/$helper" ] || missing+=("$helper")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "podman: $(podman --version)"
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the Debian packages for containers (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  echo "podman: $(podman --version)"
  exit 0
fi
cat >&2 <<MSG
missing for the containers test: ${missing[*]}. Install them with
  sudo apt-get install -y ${packages[*]}
MSG
exit 1
