"""The canonical byte encoding of a linear head, node model or global model.

Checkpoints, commitments, certificates and rounds all hash these bytes, so node and
coordinator must encode a model identically: float32 little-endian, ``W`` (D×C, row-major)
then ``b`` (C).
"""

from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.hashing import keccak256

Vector = npt.NDArray[np.float32]


def model_bytes(vector: npt.NDArray[Any]) -> bytes:
    """Canonical bytes of a model vector."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def model_hash(vector: npt.NDArray[Any]) -> bytes:
    """keccak256 of :func:`model_bytes`."""
    return keccak256(model_bytes(vector))


def vector_from_bytes(data: bytes) -> Vector:
    """Inverse of :func:`model_bytes`."""
    return np.frombuffer(data, dtype="<f4").astype(np.float32)
