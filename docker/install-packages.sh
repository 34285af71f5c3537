#!/bin/sh
# Image build step: the runtime Python packages into /opt/venv and the anvil binary into
# /usr/local/bin, from ONE package source.
#   index:      PyPI for everything but torch; torch alone (no dependencies) from PyTorch's
#               CPU index. No --extra-index-url anywhere: a name is never looked up on two
#               indexes, so a look-alike upload on one cannot shadow the other.
#   wheelhouse: no network at all; a folder made by docker/wheelhouse.sh.
# The anvil npm tarball is checked against package-lock.json's sha512 either way.
# Usage: install-packages.sh index|wheelhouse WHEELHOUSE INDEX_URL TORCH_INDEX_URL NPM_REGISTRY SETUPTOOLS
set -eu
mode="$1" wheelhouse="$2" index="$3" torch_index="$4" npm_registry="$5" setuptools="$6"
python3 -m venv /opt/venv
pip=/opt/venv/bin/pip
# pyproject's runtime dependencies; requirements.lock pins everything they pull in.
/opt/venv/bin/python - <<'EOF'
import tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
open("/tmp/runtime.txt", "w").write("\n".join(deps) + "\n")
EOF
torch=$(grep '^torch==' /tmp/runtime.txt)
case "$mode" in
  wheelhouse)
    $pip install --quiet --no-index --find-links "$wheelhouse" "$setuptools"
    $pip install --quiet --no-index --find-links "$wheelhouse" -c requirements.lock -r /tmp/runtime.txt
    ;;
  index)
    $pip install --quiet --index-url "$index" "$setuptools"
    $pip install --quiet --no-deps --index-url "$torch_index" "$torch"
    $pip install --quiet --index-url "$index" -c requirements.lock -r /tmp/runtime.txt
    ;;
  *) echo "PACKAGES must be index or wheelhouse, not '$mode'" >&2; exit 2 ;;
esac

# anvil (development chain): the platform package's static binary, verified by the lock.
/opt/venv/bin/python - "$mode" "$wheelhouse" "$npm_registry" <<'EOF'
import base64, hashlib, io, json, sys, tarfile, urllib.request
from pathlib import Path
mode, wheelhouse, registry = sys.argv[1:]
name = "@foundry-rs/anvil-linux-amd64"
entry = json.load(open("package-lock.json"))["packages"][f"node_modules/{name}"]
file = f"foundry-rs-anvil-linux-amd64-{entry['version']}.tgz"
if mode == "wheelhouse":
    data = (Path(wheelhouse) / file).read_bytes()
else:
    url = f"{registry}/{name}/-/anvil-linux-amd64-{entry['version']}.tgz"
    data = urllib.request.urlopen(url, timeout=120).read()
algo, _, digest = entry["integrity"].partition("-")
if algo != "sha512" or hashlib.sha512(data).digest() != base64.b64decode(digest):
    sys.exit(f"{file}: sha512 does not match package-lock.json")
with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    binary = tar.extractfile("package/bin/anvil")
    assert binary is not None
    out = Path("/usr/local/bin/anvil")
    out.write_bytes(binary.read())
    out.chmod(0o755)
print(f"anvil {entry['version']} installed (sha512 verified)")
EOF
rm -f /tmp/runtime.txt
