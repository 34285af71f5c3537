#!/usr/bin/env bash
# The coordinator container: where flwr 1.41 runs the ServerApp (a subprocess of the
# SuperLink), so its config, key and queue are here and nowhere else.
#   SuperLink  TLS + SuperNode authentication, bound to 127.0.0.1:9091 only: its Control
#              and Runtime APIs are loopback-only, reachable from no other container.
#   Fleet gate nginx on :9092 with the SuperLink's certificate, forwarding /v1/fleet/ only
#              (every other path: 403). Nodes connect to superlink:9092.
#   API        lethe api on :8080 (compose publishes it on the host's 127.0.0.1 only).
# It generates its own Ethereum key and publishes only the address (/outbox), registers
# the SuperNode auth key each participant published (/requests/<name>/auth.pub), submits
# the ServerApp with `flwr run` over the loopback Control API, and serves the API.
set -euo pipefail
: "${LETHE_RPC_URL:?}" "${LETHE_STORE:?}" "${LETHE_FEDERATION:=lethe}" "${LETHE_SLICES:=4}"
umask 077
mkdir -p /state /outbox
address=$(python /app/docker/keys.py eth /state)
printf '%s\n' "$address" > /outbox/address.tmp && chmod 0644 /outbox/address.tmp
mv /outbox/address.tmp /outbox/address
echo "coordinator: address $address; waiting for the contract"
until [ -s /public/deployment.json ] && [ -s /tls/superlink.pem ]; do sleep 1; done
read -r contract block < <(python -c "
import json; d = json.load(open('/public/deployment.json')); print(d['address'], d['block_number'])")
lethe configure --out /state/coordinator.json --federation "$LETHE_FEDERATION" \
  --rpc "$LETHE_RPC_URL" --contract "$contract" --deployment-block "$block" \
  --key-file /state/eth.key --store "$LETHE_STORE" --db /state/coordinator.sqlite \
  --slices "$LETHE_SLICES"
# The federation's record key (made by `lethe configure`): to the nodes only, via the
# record-key volume no other service mounts.
if ! cmp -s /state/record.key /record-key/record.key; then
  install -m 0600 /state/record.key /record-key/record.key.tmp
  mv /record-key/record.key.tmp /record-key/record.key
fi

export FLWR_HOME=/state/flwr
mkdir -p "$FLWR_HOME"
cat > "$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "lethe"

[superlink.lethe]
address = "127.0.0.1:9091"
root-certificates = "/tls/ca.pem"
TOML
flower-superlink --disable-runtime-dependency-installation --enable-supernode-auth \
  --host 127.0.0.1 --port 9091 --database "$FLWR_HOME/superlink.db" \
  --ssl-certfile /tls/superlink.pem --ssl-keyfile /tls/superlink.key \
  --ssl-ca-certfile /tls/ca.pem &
nginx -c /app/docker/fleet-gate.conf -g 'daemon off;' &
until python -c "import sys; from infra.net import port_open; sys.exit(not port_open(9091))"; do
  sleep 0.5
done

# SuperNode auth keys: registered once each, over the loopback Control API.
register_keys() {
  mkdir -p /state/registered
  for pub in /requests/*/auth.pub; do
    [ -s "$pub" ] || continue
    name=$(basename "$(dirname "$pub")")
    if ! cmp -s "$pub" "/state/registered/$name.pub"; then
      if flwr supernode register "$pub" lethe --name "$name" >/dev/null 2>&1; then
        cp "$pub" "/state/registered/$name.pub"
        echo "coordinator: SuperNode key of $name registered"
      fi
    fi
  done
}
( while true; do register_keys; sleep 1; done ) &

# The ServerApp starts once every participant that asked to join has its records in and
# its SuperNode online (at most LETHE_READY_WAIT_S): started earlier, it competes with
# their embedding, and an initial round that starts without a node fails for good (three
# nodes: every one must commit).
count() { local n=0 f; for f in "$@"; do [ -e "$f" ] && n=$((n + 1)); done; echo "$n"; }
online() {
  flwr supernode list lethe --format json 2>/dev/null | python -c "
import json, sys; print(sum(n['status'] == 'online' for n in json.load(sys.stdin)['nodes']))
" 2>/dev/null || echo 0
}
deadline=$(( $(date +%s) + ${LETHE_READY_WAIT_S:-900} ))
until [ "$(date +%s)" -ge "$deadline" ]; do
  asked=$(count /requests/*/address); ready=$(count /requests/*/ready)
  [ "$asked" -gt 0 ] && [ "$ready" -ge "$asked" ] && [ "$(online)" -ge "$asked" ] && break
  sleep 2
done
echo "coordinator: $(count /requests/*/ready) participants ready; starting the ServerApp"
flwr run /app lethe --run-config 'coordinator-config="/state/coordinator.json"'
lethe api --config /state/coordinator.json --host 0.0.0.0 --port 8080 &
# The container ends (and compose restarts it) when any of its processes ends.
wait -n
echo "coordinator: a process ended; stopping" >&2
exit 1
