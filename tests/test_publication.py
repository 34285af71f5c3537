"""Published global models carry noise that an observer cannot average or subtract away.

Specifications (the measurement behind the default is ``make bench-privacy``):
- the noise is a function of the exact model: an unchanged model is published with the
  very same bytes, so many publications of one model average to nothing new;
- different models get independent noise of the configured scale;
- a round publishes the exact weighted sum plus that noise, and σ = 0 publishes it exactly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import pytest

from protocol.model import vector_from_bytes
from protocol.publication import DEFAULT_SIGMA, published_model

if TYPE_CHECKING:
    from tests.round_fixtures import MemoryFederation

pytest_plugins = ["tests.chain_fixtures", "tests.round_fixtures"]


def test_an_unchanged_model_is_republished_with_the_same_noise() -> None:
    model = np.random.default_rng(1).standard_normal(1155).astype(np.float32)
    copies = [published_model(model.copy(), DEFAULT_SIGMA) for _ in range(50)]
    assert {c.tobytes() for c in copies} == {copies[0].tobytes()}
    # An observer averaging every publication learns nothing beyond one of them.
    assert np.array_equal(np.mean(copies, axis=0, dtype=np.float64).astype(np.float32), copies[0])


def test_noise_has_the_configured_scale_and_changes_with_the_model() -> None:
    rng = np.random.default_rng(2)
    model = rng.standard_normal(20_000).astype(np.float32)
    nudged = model.copy()
    nudged[7] += 1e-6  # one coordinate, as a forget would change the model
    a, b = (published_model(v, 0.15) - v for v in (model, nudged))
    assert 0.14 < float(np.std(a)) < 0.16 and abs(float(np.mean(a))) < 0.01
    assert abs(float(np.corrcoef(a, b)[0, 1])) < 0.05  # fresh noise, nothing cancels
    assert published_model(model, 0.0).tobytes() == model.tobytes()
    with pytest.raises(ValueError):
        published_model(model, float("nan"))


def test_a_round_publishes_the_exact_sum_plus_seeded_noise(
    memory_federation: MemoryFederation,
) -> None:
    fed = memory_federation
    sigma = fed.coordinator.config.publish_noise
    assert sigma == DEFAULT_SIGMA
    noisy = [fed.coordinator.run_round(None).info["global_model_cid"] for _ in range(2)]
    assert noisy[0] == noisy[1]
    fed.coordinator.config = replace(fed.coordinator.config, publish_noise=0.0)
    exact_cid = fed.coordinator.run_round(None).info["global_model_cid"]
    exact = vector_from_bytes(fed.store.get(exact_cid))
    published = vector_from_bytes(fed.store.get(noisy[0]))
    assert published.tobytes() == published_model(exact, sigma).tobytes()
    assert 0.8 * sigma < float(np.std(published - exact)) < 1.2 * sigma
