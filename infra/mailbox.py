"""A sealed message from one account to another, in a transaction's calldata.

`lethe admit` sends the newcomer its sealed record key this way
(:mod:`protocol.invitation`): the chain is the one channel the owner and a newcomer
already share, it says who sent what (only the owner's account signs transactions from
it), and the envelope keeps the content to its recipient. A zero-value transaction to an
externally owned account runs no code and costs 21,000 gas plus the calldata.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from protocol.errors import LedgerError


def _web3(rpc_url: str, timeout: float) -> Any:
    from web3 import Web3

    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))


def send(rpc_url: str, private_key: str, to: str, payload: bytes, *, timeout: float = 30.0) -> str:
    """Send ``payload`` to ``to`` from ``private_key``'s account; the mined tx hash."""
    from eth_account import Account
    from web3 import Web3

    w3 = _web3(rpc_url, timeout)
    account = Account.from_key(private_key)
    try:
        tx: dict[str, Any] = {
            "from": account.address,
            "to": Web3.to_checksum_address(to),
            "value": 0,
            "data": payload,
            "nonce": w3.eth.get_transaction_count(account.address, "pending"),
            "chainId": w3.eth.chain_id,
            "gasPrice": w3.eth.gas_price,
        }
        tx["gas"] = w3.eth.estimate_gas(tx)
        signed = account.sign_transaction(tx)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=timeout)
    except Exception as exc:  # web3 and requests raise many types; say where
        raise LedgerError(f"cannot send the sealed message to {to} via {rpc_url}: {exc}") from exc
    if receipt["status"] != 1:
        raise LedgerError(f"the sealed message to {to} failed on chain (tx {tx_hash.hex()})")
    return "0x" + bytes(tx_hash).hex().removeprefix("0x")


def received(
    rpc_url: str, to: str, sender: str, since_block: int, *, timeout: float = 30.0
) -> Iterator[tuple[int, bytes]]:
    """(block, calldata) of every transaction from ``sender`` to ``to`` since ``since_block``."""
    w3 = _web3(rpc_url, timeout)
    try:
        head = w3.eth.block_number
        for number in range(since_block, head + 1):
            block = w3.eth.get_block(number, full_transactions=True)
            for tx in block["transactions"]:
                if (
                    tx.get("to")
                    and str(tx["to"]).lower() == to.lower()
                    and str(tx["from"]).lower() == sender.lower()
                ):
                    yield number, bytes(tx["input"])
    except LedgerError:
        raise
    except Exception as exc:
        raise LedgerError(f"cannot read blocks from {rpc_url}: {exc}") from exc
