#!/usr/bin/env bash
# Fill an offline package source for `PACKAGES=wheelhouse` image builds: every wheel of
# requirements.lock (torch's CPU wheel comes from wherever this host's pip finds it),
# the build backend, and the anvil npm tarball (checked against package-lock.json in the
# build). Run where the registries are reachable; copy the folder to an air-gapped host.
# Usage: docker/wheelhouse.sh [DIR]   (default docker/wheelhouse; idempotent)
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-docker/wheelhouse}"
pip="${PIP:-.venv/bin/pip}"
setuptools=$(sed -n 's/^ARG SETUPTOOLS=//p' docker/Dockerfile)
anvil_version=$(python3 -c "import json; print(json.load(open('package-lock.json'))['packages']['node_modules/@foundry-rs/anvil-linux-amd64']['version'])")
mkdir -p "$dir"
stamp="$dir/.complete-$( (cat requirements.lock package-lock.json; echo "$setuptools") | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then echo "wheelhouse $dir is complete"; exit 0; fi
echo "wheelhouse: pip download of requirements.lock into $dir …"
"$pip" download --quiet --disable-pip-version-check -d "$dir" -r requirements.lock "$setuptools" 2>&1 \
  | grep -v "is neither a file nor a directory" || true
test -n "$(ls "$dir"/torch-*.whl 2>/dev/null)" || { echo "no torch wheel in $dir" >&2; exit 1; }
tgz="foundry-rs-anvil-linux-amd64-$anvil_version.tgz"
if [ ! -f "$dir/$tgz" ]; then
  (cd "$dir" && npm pack --silent "@foundry-rs/anvil-linux-amd64@$anvil_version" >/dev/null)
fi
rm -f "$dir"/.complete-*; touch "$stamp"
echo "wheelhouse $dir: $(ls "$dir" | wc -l) files"
