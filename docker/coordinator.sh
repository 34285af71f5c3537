#!/usr/bin/env bash
# The coordinator container: submit the ServerApp to the SuperLink, then serve the API.
set -euo pipefail
: "${LETHE_FEDERATION:=lethe}" "${LETHE_SLICES:=8}"
dep=/config/deployment.json
contract=$(python -c "import json; print(json.load(open('$dep'))['address'])")
block=$(python -c "import json; print(json.load(open('$dep'))['block_number'])")
lethe configure --out /state/coordinator.json --federation "$LETHE_FEDERATION" \
  --rpc "$LETHE_RPC_URL" --contract "$contract" --deployment-block "$block" \
  --key-file /config/coordinator/coordinator.key --store "$LETHE_STORE" \
  --db /state/coordinator.sqlite --slices "$LETHE_SLICES"
export FLWR_HOME=/state/flwr; mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "lethe"
[superlink.lethe]
address = "superlink:9091"
root-certificates = "/certs/ca.pem"
TOML
flwr run /app lethe --run-config 'coordinator-config="/state/coordinator.json"'
exec lethe api --config /state/coordinator.json --host 0.0.0.0 --port 8080
