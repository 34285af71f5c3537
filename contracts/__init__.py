"""The Lethe Solidity contract and its committed, reproducible build artifacts."""
