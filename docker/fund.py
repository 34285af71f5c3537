"""DEVELOPMENT ONLY: give an address 100 ETH on anvil (``anvil_setBalance``) for its gas.

Usage: ``python docker/fund.py ADDRESS`` with LETHE_RPC_URL set. On any other chain each
participant funds its own account.
"""

import os
import sys

import requests

address = sys.argv[1]
reply = requests.post(
    os.environ["LETHE_RPC_URL"],
    json={
        "jsonrpc": "2.0",
        "id": 1,
        "method": "anvil_setBalance",
        "params": [address, hex(100 * 10**18)],
    },
    timeout=10,
).json()
if "error" in reply:
    sys.exit(f"anvil_setBalance {address}: {reply['error']}")
print(f"funded {address} (dev chain)")
