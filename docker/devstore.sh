#!/bin/sh
# Development content store: the js-ipfs daemon (npm `ipfs`, the same RPC API as Kubo),
# offline, no swarm or gateway, its RPC API on 0.0.0.0:5001 of the compose network.
# node_modules (from `make setup-test`) is mounted read-only at /opt/js/node_modules.
set -eu
jsipfs="node /opt/js/node_modules/ipfs/src/cli.js"
export IPFS_PATH=/data/ipfs
if [ ! -f "$IPFS_PATH/config" ]; then
  $jsipfs init --emptyRepo >/dev/null
  node - <<'JS'
const fs = require("fs");
const path = process.env.IPFS_PATH + "/config";
const c = JSON.parse(fs.readFileSync(path));
c.Bootstrap = [];
Object.assign(c.Addresses, {Swarm: [], API: "/ip4/0.0.0.0/tcp/5001", Gateway: "", RPC: "", Delegates: []});
c.Discovery.MDNS.Enabled = false;
c.Discovery.webRTCStar.Enabled = false;
fs.writeFileSync(path, JSON.stringify(c, null, 2));
JS
fi
exec $jsipfs daemon --offline
