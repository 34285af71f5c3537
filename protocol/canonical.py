"""Canonical JSON: the single byte encoding that gets hashed, signed and stored by CID."""

import json
from typing import Any


def canonical_json(obj: Any) -> bytes:
    """Encode ``obj`` as sorted-key, separator-minimal UTF-8 JSON.

    Two parties that agree on a value must agree on its bytes, otherwise hashes,
    signatures and CIDs of the same certificate or manifest would differ.
    """
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
