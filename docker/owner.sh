#!/usr/bin/env bash
# The federation owner's desk, DEVELOPMENT ONLY (a dev chain: funding is anvil_setBalance).
# The owner's key is generated here, in this container's own volume, never a published
# development account: a participant knowing the owner key could admit Sybils, set the
# quorum to 1 or remove honest nodes.
# 1. A CA and the SuperLink's TLS certificate: the CA key stays in this container's own
#    volume, the certificate and its key go to the coordinator's TLS volume only, the CA
#    certificate to the public volume everyone reads.
# 2. Deploys the contract for the coordinator's address (which the coordinator generated
#    itself and published), writes /public/deployment.json.
# 3. Keeps admitting: every participant that published an address in a request folder
#    mounted at /requests/<name> is funded (anvil_setBalance, dev chain only) and admitted.
#    A production owner reviews each request and runs `lethe admit --node ADDR` instead.
set -euo pipefail
: "${LETHE_RPC_URL:?}"
umask 077
ca=/owner/ca
mkdir -p "$ca" /public
if [ ! -f /tls/superlink.pem ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -days 365 \
    -subj "/CN=lethe-dev-ca" -keyout "$ca/ca.key" -out "$ca/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -subj "/CN=superlink" \
    -keyout /tls/superlink.key -out "$ca/superlink.csr" \
    -addext "subjectAltName=DNS:superlink,DNS:localhost,IP:127.0.0.1" 2>/dev/null
  openssl x509 -req -in "$ca/superlink.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" \
    -CAcreateserial -days 365 -copy_extensions copy -out /tls/superlink.pem 2>/dev/null
  cp "$ca/ca.pem" /tls/ca.pem
  install -m 0644 "$ca/ca.pem" /public/ca.pem
  chmod 0644 /tls/superlink.pem /tls/ca.pem
  echo "owner: CA and SuperLink certificate issued"
fi
until python -c "import sys; from launcher.devnet import rpc_ready; sys.exit(not rpc_ready('$LETHE_RPC_URL'))"; do
  sleep 1
done
owner=$(python /app/docker/keys.py eth /owner/key)
LETHE_PRIVATE_KEY=$(cat /owner/key/eth.key)
export LETHE_PRIVATE_KEY
until [ -s /requests/coordinator/address ]; do sleep 1; done
coordinator=$(cat /requests/coordinator/address)
if [ ! -f /public/deployment.json ]; then
  python /app/docker/fund.py "$owner"
  python /app/docker/fund.py "$coordinator"
  lethe deploy --rpc "$LETHE_RPC_URL" --coordinator "$coordinator" \
    --out /owner/deployment.json
  install -m 0644 /owner/deployment.json /public/deployment.json
fi
echo "owner: admitting participants that publish a request in /requests/<name>/address"
while true; do
  for request in /requests/*/address; do
    name=$(basename "$(dirname "$request")")
    [ "$name" = coordinator ] || [ ! -s "$request" ] || [ -f "/owner/admitted/$name" ] && continue
    /app/docker/admit.sh "$name" "$(cat "$request")"
  done
  sleep 1
done
