"""Shared infrastructure both sides import: ports, secret and config files, CLI options.

The layers, enforced by ``tests/test_architecture.py``: ``protocol`` (pure primitives)
at the bottom; ``infra`` on it; ``node`` and ``coordinator`` on both, never on each
other; ``launcher`` (the local federation) on top of everything.
"""
