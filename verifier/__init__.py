"""The public verifier: anyone checks a federation from the chain and the content store.

The audit, the explorer, the data subject's receipt check and the content-store tools.
It imports only ``protocol`` and ``infra``: nothing here trusts, or is, the coordinator.
"""
