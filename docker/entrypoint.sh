#!/usr/bin/env bash
# Container entry point: `<role> [args]` with role one of chain | superlink | coordinator |
# node | bootstrap, or any lethe / lethe-node / flower-* command line as given.
set -euo pipefail
role="${1:-help}"; shift || true
case "$role" in
  chain)       # development chain only: anvil with a state file, on all interfaces
    exec /app/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil --host 0.0.0.0 --port 8545 \
         --state /chain/anvil-state.json --state-interval 5 "$@" ;;
  superlink)
    exec flower-superlink --disable-runtime-dependency-installation --host 0.0.0.0 --port 9091 \
         --database /state/superlink.db --ssl-certfile /certs/superlink.pem \
         --ssl-keyfile /certs/superlink.key --ssl-ca-certfile /certs/ca.pem "$@" ;;
  bootstrap)   exec docker/bootstrap.sh "$@" ;;
  node)        exec docker/node.sh "$@" ;;
  coordinator) exec docker/coordinator.sh "$@" ;;
  help|--help)
    echo "roles: chain | superlink | bootstrap | node | coordinator (see docker-compose.yml)"
    exec lethe --help ;;
  *) exec "$role" "$@" ;;
esac
