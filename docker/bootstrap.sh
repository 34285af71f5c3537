#!/usr/bin/env bash
# One-shot set-up of a development federation: TLS certificates for the SuperLink,
# the contract deployed and the coordinator and nodes admitted (dev keys: dev chain only).
# A production federation replaces this with its own CA, keys and `lethe deploy/admit`.
set -euo pipefail
: "${LETHE_RPC_URL:?}" "${LETHE_NODES:=3}"
mkdir -p /certs /config
if [ ! -f /certs/ca.pem ]; then
  openssl req -x509 -newkey rsa:3072 -nodes -days 365 -subj "/CN=lethe-dev-ca" \
    -keyout /certs/ca.key -out /certs/ca.pem
  openssl req -newkey rsa:3072 -nodes -subj "/CN=superlink" -keyout /certs/superlink.key \
    -out /certs/superlink.csr -addext "subjectAltName=DNS:superlink"
  openssl x509 -req -in /certs/superlink.csr -CA /certs/ca.pem -CAkey /certs/ca.key \
    -CAcreateserial -days 365 -copy_extensions copy -out /certs/superlink.pem
fi
until lethe deploy --help >/dev/null && python -c "
import sys; from launcher.devnet import rpc_ready; sys.exit(0 if rpc_ready('$LETHE_RPC_URL') else 1)"; do
  sleep 1
done
dev_key() { python -c "from launcher.devnet import dev_accounts; print(dev_accounts($1 + 1)[$1].private_key)"; }
dev_addr() { python -c "from launcher.devnet import dev_accounts; print(dev_accounts($1 + 1)[$1].address)"; }
if [ ! -f /config/deployment.json ]; then
  lethe deploy --rpc "$LETHE_RPC_URL" --dev-account 0 --coordinator "$(dev_addr 1)" \
    --out /config/deployment.json
  for i in $(seq 1 "$LETHE_NODES"); do
    lethe admit --rpc "$LETHE_RPC_URL" --dev-account 0 --deployment /config/deployment.json \
      --node "$(dev_addr $((i + 1)))"
    mkdir -p "/config/node-$i" && dev_key $((i + 1)) > "/config/node-$i/eth.key"
  done
  mkdir -p /config/coordinator && dev_key 1 > /config/coordinator/coordinator.key
fi
echo "bootstrap done: $(python -c "import json; print(json.load(open('/config/deployment.json'))['address'])")"
