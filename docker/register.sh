#!/usr/bin/env bash
# The coordinator: register one participant's SuperNode authentication public key (read
# from stdin) with the SuperLink, over its loopback Control API. coordinator.sh does this
# for every participant whose outbox it mounts; a participant that joins a running
# federation hands its key over instead:  register.sh NAME < auth.pub
set -euo pipefail
name="$1"
export FLWR_HOME=/state/flwr
mkdir -p /state/registered
umask 022
cat > "/state/registered/$name.pub.new"
flwr supernode register "/state/registered/$name.pub.new" lethe --name "$name" >/dev/null
mv "/state/registered/$name.pub.new" "/state/registered/$name.pub"
echo "coordinator: SuperNode key of $name registered"
