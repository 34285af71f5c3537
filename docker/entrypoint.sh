#!/usr/bin/env bash
# Container entry point: `<role> [args]` with role one of chain | rpc-gate | owner | coordinator |
# node, or any lethe / lethe-node command line as given (`lethe audit …`).
set -euo pipefail
role="${1:-help}"; shift || true
case "$role" in
  chain)       # development chain only: anvil with a state file, on the compose network
    exec anvil --host 0.0.0.0 --port 8545 --state /chain/anvil-state.json \
         --state-interval 5 "$@" ;;
  rpc-gate)    # the chain's RPC for participants: eth_/net_/web3_ only (infra/rpc_gate.py)
    exec python -m infra.rpc_gate --listen 0.0.0.0:8545 --upstream "${LETHE_CHAIN_UPSTREAM:?}" ;;
  owner)       exec /app/docker/owner.sh "$@" ;;
  coordinator) exec /app/docker/coordinator.sh "$@" ;;
  node)        exec /app/docker/node.sh "$@" ;;
  help|--help)
    echo "roles: chain | rpc-gate | owner | coordinator | node (see docker-compose.yml), or a command"
    exec lethe --help ;;
  *) exec "$role" "$@" ;;
esac
