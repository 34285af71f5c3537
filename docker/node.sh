#!/usr/bin/env bash
# A node container: ingest its share of the data once, join (share key on chain), run.
set -euo pipefail
: "${LETHE_NODE_INDEX:?}" "${LETHE_NODES:=3}" "${LETHE_FEDERATION:=lethe}" "${LETHE_SLICES:=8}"
name="node-$LETHE_NODE_INDEX"; home="/data/$name"; mkdir -p "$home"
contract=$(python -c "import json; print(json.load(open('/config/deployment.json'))['address'])")
if [ ! -f "$home/node.sqlite" ]; then
  lethe-node ingest --db "$home/node.sqlite" --default --partition "$LETHE_NODE_INDEX/$LETHE_NODES" \
    --federation "$LETHE_FEDERATION" --slices "$LETHE_SLICES" --test-limit 500
fi
lethe-node join --db "$home/node.sqlite" --home "$home" --name "$name" \
  --rpc "$LETHE_RPC_URL" --contract "$contract" --store "$LETHE_STORE" \
  --eth-key-file "/config/$name/eth.key"
exec lethe-node run --config "$home/node.json" --superlink superlink:9091 \
  --root-certificates /certs/ca.pem
