"""The public verifier's commands of `lethe` (the command itself is ``launcher.cli``)."""

COMMANDS = {
    "cid": "verifier.store_cli:cid",
    "store": "verifier.store_cli:store",
    "audit": "verifier.audit_cli:audit",
    "check-receipt": "verifier.receipt_cli:check_receipt",
}
