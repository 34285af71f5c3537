"""The PyTorch fp32 all-MiniLM-L6-v2 pipeline Lethe used before its ONNX int8 encoder.

Only ``bench.ingest`` uses it, to measure the current encoder against it in one run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from protocol.features import EMBEDDING_DIM, MAX_TOKENS, model_dir

LENGTH_BUCKET = 8
"""Texts are padded up to a multiple of this many tokens (their own bucket, not the batch's)."""


def _bucket(n_tokens: int) -> int:
    return min(MAX_TOKENS, LENGTH_BUCKET * math.ceil(n_tokens / LENGTH_BUCKET))


class TorchTextEncoder:
    """all-MiniLM-L6-v2 in PyTorch fp32, batched by length bucket: Lethe's encoder until v0.2.

    Kept as the baseline of ``bench.ingest``. Its rows depend on their batch-mates (the
    batch's row count changes the BLAS reduction order), which is why it was replaced.
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
            raise RuntimeError(f"cannot load all-MiniLM-L6-v2 from {folder}: {exc}") from exc

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
