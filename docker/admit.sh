#!/usr/bin/env bash
# The owner's desk, DEVELOPMENT ONLY: fund a participant's address (anvil_setBalance) and
# admit it on chain (`lethe admit`, signed by the owner key owner.sh generated here). owner.sh runs it for
# every request folder it mounts; a participant that joins a running federation hands its
# address over and the owner runs it by hand:  admit.sh NAME ADDRESS
set -euo pipefail
: "${LETHE_RPC_URL:?}"
name="$1" address="$2"
LETHE_PRIVATE_KEY=$(cat /owner/key/eth.key)
export LETHE_PRIVATE_KEY
python /app/docker/fund.py "$address"
lethe admit --rpc "$LETHE_RPC_URL" --deployment /owner/deployment.json \
  --node "$address"
mkdir -p /owner/admitted && echo "$address" > "/owner/admitted/$name"
echo "owner: $name admitted ($address)"
