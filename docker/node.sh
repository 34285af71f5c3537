#!/usr/bin/env bash
# A participant's node container. Everything secret is made here and stays in /data:
# the Ethereum key, the X25519 share key (`lethe-node join`) and the SuperNode auth key;
# the one shared secret, the federation's record key, is read from /record-key (read-only).
# Only the address and the auth public key are published (/outbox), for the owner to
# admit on chain and the coordinator to register with the SuperLink. Then: ingest this
# participant's records once (LETHE_CSV, or a partition of the built-in dataset), join,
# and run against the Fleet gate with TLS and SuperNode authentication.
set -euo pipefail
: "${LETHE_RPC_URL:?}" "${LETHE_STORE:?}" "${LETHE_NODE_NAME:?}" "${LETHE_FEDERATION:=lethe}"
: "${LETHE_SLICES:=4}" "${LETHE_SUPERLINK:=superlink:9092}"
umask 077
mkdir -p /data /outbox
address=$(python /app/docker/keys.py eth /data)
python /app/docker/keys.py auth /data >/dev/null
install -m 0644 /data/auth.pub /outbox/auth.pub.tmp && mv /outbox/auth.pub.tmp /outbox/auth.pub
printf '%s\n' "$address" > /outbox/address.tmp && chmod 0644 /outbox/address.tmp
mv /outbox/address.tmp /outbox/address
echo "$LETHE_NODE_NAME: address $address; waiting to be admitted"
until [ -s /public/deployment.json ]; do sleep 1; done
contract=$(python -c "import json; print(json.load(open('/public/deployment.json'))['address'])")
until python -c "
import sys; from protocol.ledger import Ledger
sys.exit(not Ledger('$LETHE_RPC_URL', '$contract').is_node('$address'))" 2>/dev/null; do
  sleep 1
done
if [ ! -f /data/node.sqlite ]; then
  if [ -n "${LETHE_CSV:-}" ]; then
    lethe-node ingest --db /data/node.sqlite --csv "$LETHE_CSV" --node-id "$LETHE_NODE_NAME" \
      --federation "$LETHE_FEDERATION" --slices "$LETHE_SLICES"
  else
    : "${LETHE_PARTITION:?set LETHE_CSV or LETHE_PARTITION (i/n of the built-in dataset)}"
    lethe-node ingest --db /data/node.sqlite --default --partition "$LETHE_PARTITION" \
      --limit "${LETHE_RECORDS:-200}" --test-limit "${LETHE_TEST_RECORDS:-200}" \
      --federation "$LETHE_FEDERATION" --slices "$LETHE_SLICES"
  fi
fi
until [ -s /record-key/record.key ]; do sleep 1; done  # from the coordinator, read-only
lethe-node join --db /data/node.sqlite --home /data --name "$LETHE_NODE_NAME" \
  --rpc "$LETHE_RPC_URL" --contract "$contract" --store "$LETHE_STORE" \
  --eth-key-file /data/eth.key --record-key-file /record-key/record.key
touch /outbox/ready  # records in, share key on chain: the coordinator may start rounds
exec lethe-node run --config /data/node.json --superlink "$LETHE_SUPERLINK" \
  --root-certificates /public/ca.pem --auth-key /data/auth.key
