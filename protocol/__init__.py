"""What node and coordinator agree on: field math, envelopes, commitments, certificates, CIDs.

Pure primitives: nothing here imports Flower, Flask or web3 at module level.
"""
