"""The chain's RPC gate forwards reads and signed transactions, and nothing that rewrites
the chain: a participant behind it cannot act as the owner of a development chain.

A real anvil behind the real gate over HTTP.

Specifications (docs/trust.md, "Compose"):
- ``eth_*``, ``net_*``, ``web3_*`` calls are answered by the chain, through the gate;
- ``anvil_setBalance``, ``anvil_setStorageAt``, ``anvil_impersonateAccount``, ``evm_*`` and
  ``eth_sendTransaction`` (signing with an unlocked account) are refused, and the chain
  is unchanged;
- a batch with one refused call is refused whole: none of it reaches the chain.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from infra.net import free_port
from infra.rpc_gate import serve
from launcher.devnet import Devnet


@pytest.fixture(scope="module")
def chain() -> Iterator[Devnet]:
    with Devnet() as devnet:
        yield devnet


@pytest.fixture
def gate(chain: Devnet) -> Iterator[str]:
    port = free_port()
    server = serve(("127.0.0.1", port), chain.rpc_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    server.server_close()


def rpc(url: str, method: str, *params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)}
    reply: dict[str, Any] = requests.post(url, json=body, timeout=10).json()
    return reply


def test_reads_and_chain_info_pass(gate: str, chain: Devnet) -> None:
    assert rpc(gate, "eth_chainId")["result"] == rpc(chain.rpc_url, "eth_chainId")["result"]
    assert "result" in rpc(gate, "net_version")
    assert "result" in rpc(gate, "web3_clientVersion")
    assert "result" in rpc(gate, "eth_blockNumber")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("anvil_setBalance", ["0x" + "11" * 20, hex(10**21)]),
        ("anvil_setStorageAt", ["0x" + "11" * 20, "0x0", "0x" + "22" * 32]),
        ("anvil_impersonateAccount", ["0x" + "11" * 20]),
        ("hardhat_setBalance", ["0x" + "11" * 20, hex(10**21)]),
        ("evm_mine", []),
        ("evm_revert", ["0x1"]),
        ("debug_traceTransaction", ["0x" + "00" * 32]),
        ("eth_sendTransaction", [{"from": "0x" + "11" * 20, "to": "0x" + "22" * 20}]),
    ],
)
def test_admin_methods_are_refused_and_change_nothing(
    gate: str, chain: Devnet, method: str, params: list[Any]
) -> None:
    head = rpc(chain.rpc_url, "eth_blockNumber")["result"]
    balance = rpc(chain.rpc_url, "eth_getBalance", "0x" + "11" * 20, "latest")["result"]
    reply = rpc(gate, method, *params)
    assert reply["id"] == 7
    assert reply["error"]["code"] == -32601 and method in reply["error"]["message"]
    assert rpc(chain.rpc_url, "eth_blockNumber")["result"] == head
    assert rpc(chain.rpc_url, "eth_getBalance", "0x" + "11" * 20, "latest")["result"] == balance


def test_a_batch_with_one_admin_call_is_refused_whole(gate: str, chain: Devnet) -> None:
    head = rpc(chain.rpc_url, "eth_blockNumber")["result"]
    batch: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "evm_mine", "params": []},
    ]
    reply = requests.post(gate, json=batch, timeout=10).json()
    assert [r["id"] for r in reply] == [2] and reply[0]["error"]["code"] == -32601
    assert rpc(chain.rpc_url, "eth_blockNumber")["result"] == head
    fine: list[dict[str, Any]] = [
        {"jsonrpc": "2.0", "id": 3, "method": "eth_chainId", "params": []}
    ]
    assert requests.post(gate, json=fine, timeout=10).json()[0]["result"]


def test_garbage_is_a_parse_error(gate: str) -> None:
    reply = requests.post(gate, data=b"{not json", timeout=10)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == -32700
