#!/usr/bin/env bash
# Make sure a headless-capable Chromium exists for the explorer's browser test.
# Idempotent: does nothing when chromium (or $LETHE_CHROMIUM) is already there. Installs the
# Debian package when run as root; otherwise says what to run and exits 0, so the rest of the
# setup goes on (only that test needs a browser, and it fails saying so). Never downloads a
# browser through Playwright: the test drives the system Chromium with executable_path.
set -euo pipefail

if [ -n "${LETHE_CHROMIUM:-}" ]; then
  if [ -x "$LETHE_CHROMIUM" ]; then
    echo "chromium: $LETHE_CHROMIUM (LETHE_CHROMIUM)"
    exit 0
  fi
  echo "LETHE_CHROMIUM=$LETHE_CHROMIUM is not an executable file" >&2
  exit 1
fi

if command -v chromium >/dev/null 2>&1; then
  echo "chromium: $(command -v chromium)"
  exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing the Debian package chromium (for the explorer's browser test)"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  echo "chromium: $(command -v chromium)"
  exit 0
fi

cat >&2 <<'MSG'
chromium is not installed; the explorer's browser test needs it. Either
  sudo apt-get install -y chromium        (Debian/Ubuntu)
or point LETHE_CHROMIUM at any Chromium/Chrome executable, then run `make setup` again.
MSG
exit 0
