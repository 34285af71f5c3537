"""SISA node: deterministic sliced training, exact forgetting, crash recovery, certificates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from eth_account import Account

from node.sisa import (
    SisaNode,
    assign,
    average,
    epochs_per_slice,
    evaluate,
    head_to_vector,
    predict,
    vector_to_head,
)
from node.store import NodeError, Record
from protocol.hashing import keccak256
from protocol.model import model_hash
from tests.conftest import REPO_ROOT
from tests.node_fixtures import (
    WORDS,
    build_node,
    fake_embed,
    make_records,
    small_config,
    store_files,
)

NODE_KEY = "0x" + "33" * 32
RECORDS = make_records(120)


def checkpoint_hashes(node: SisaNode) -> dict[tuple[int, int], bytes]:
    cfg = node.config
    hashes = {}
    for s in range(cfg.shards):
        for k in range(cfg.slices):
            checkpoint = node.store.checkpoint(s, k)
            assert checkpoint is not None
            hashes[(s, k)] = checkpoint.model_hash
    return hashes


def without(ids: set[str]) -> list[Record]:
    return [r for r in RECORDS if r.id not in ids]


@pytest.mark.parametrize("feature_map", ["none", "rff:64"])
def test_forget_equals_retrain_from_scratch(tmp_path: Path, feature_map: str) -> None:
    config = small_config(feature_map=feature_map)
    node = build_node(tmp_path / "a.db", RECORDS, config)
    victim = RECORDS[37]
    before = node.model()
    result = node.forget([victim.id])
    after = node.model()

    scratch = build_node(tmp_path / "b.db", without({victim.id}), config)
    assert after.hash == scratch.model().hash
    assert result.model_hash_after == after.hash_hex == scratch.model().hash_hex
    assert result.model_hash_before == before.hash_hex != after.hash_hex
    assert checkpoint_hashes(node) == checkpoint_hashes(scratch)
    # Same slices; their roots differ only by each store's own salt key.
    assert {k: n for k, (n, _) in node.store.slices().items()} == {
        k: n for k, (n, _) in scratch.store.slices().items()
    }
    assert after.n_samples == before.n_samples - 1 == len(RECORDS) - 1


def test_forget_retrains_only_from_the_records_slice(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS)
    victim = next(r for r in RECORDS if assign(r.id, "fed-test", 2, 4)[1] == 2)
    shard, slice_ = assign(victim.id, "fed-test", 2, 4)
    old = checkpoint_hashes(node)
    result = node.forget([victim.id])
    new = checkpoint_hashes(node)
    changed = {key for key in old if old[key] != new[key]}
    assert changed == {(shard, k) for k in range(slice_, 4)}
    (retrain,) = result.retrains
    assert (retrain.shard, retrain.slices_retrained) == (shard, (2, 3))
    assert retrain.from_checkpoint_hash == "0x" + old[(shard, 1)].hex()
    # Σ over retrained steps of the training-set size, recomputed from the stored layout.
    in_shard = [assign(r.id, "fed-test", 2, 4) for r in without({victim.id})]
    expected = sum(sum(1 for s, k in in_shard if s == shard and k <= step) for step in (2, 3))
    assert retrain.samples_retrained == expected


def test_coalesced_forget_equals_retrain_from_scratch(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS)
    victims = [RECORDS[i].id for i in (3, 50, 51, 88, 119)]
    layout = {v: assign(v, "fed-test", 2, 4) for v in victims}
    result = node.forget(victims)
    scratch = build_node(tmp_path / "b.db", without(set(victims)))
    assert node.model().hash == scratch.model().hash
    assert checkpoint_hashes(node) == checkpoint_hashes(scratch)
    # One batch, one retrain per affected shard, from its earliest affected slice.
    assert {r.request_id for r in result.records} == {node.record_tag(v) for v in victims}
    for retrain in result.retrains:
        first = min(k for s, k in layout.values() if s == retrain.shard)
        assert retrain.slices_retrained == tuple(range(first, 4))
    assert {r.shard for r in result.retrains} == {s for s, _ in layout.values()}
    assert node.store.forget_history()[-1]["batch"] == result.batch


def test_sequential_forgets_equal_one_coalesced_forget(tmp_path: Path) -> None:
    one_by_one = build_node(tmp_path / "a.db", RECORDS)
    for rid in (RECORDS[5].id, RECORDS[70].id):
        one_by_one.forget([rid])
    together = build_node(tmp_path / "b.db", RECORDS)
    together.forget([RECORDS[70].id, RECORDS[5].id])
    assert one_by_one.model().hash == together.model().hash


def test_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    first = build_node(tmp_path / "a.db", RECORDS)
    # Other arrival order, in two ingests with a training run in between.
    second = SisaNode.create(tmp_path / "b.db", small_config())
    second.ingest(RECORDS[::-1][:50], embed=fake_embed)
    second.train()
    second.ingest(RECORDS[::-1][50:], embed=fake_embed)
    report = second.train()
    assert report.retrained_from  # the new records made some slices stale
    assert checkpoint_hashes(first) == checkpoint_hashes(second)
    assert first.model().hash == second.model().hash
    assert first.train(from_scratch=True).slices_trained == 8
    assert checkpoint_hashes(first) == checkpoint_hashes(second)
    other_node = build_node(tmp_path / "c.db", RECORDS, small_config(node_id="node-2"))
    assert other_node.model().hash != first.model().hash  # seeds are per node


EPOCH_1 = keccak256(b"roster 1")
EPOCH_2 = keccak256(b"roster 2")


def build_for(path: Path, records: list[Record], epoch: bytes) -> SisaNode:
    """A node holding ``records``, trained for a federation roster's ``epoch``."""
    node = build_node(path, records)
    node.enter_epoch(epoch)
    node.train()
    return node


def test_a_new_roster_epoch_retrains_every_slice_and_gives_a_new_model(tmp_path: Path) -> None:
    node = build_for(tmp_path / "a.db", RECORDS, EPOCH_1)
    first = node.model()
    assert not node.enter_epoch(EPOCH_1)  # the same roster: nothing to do
    assert node.is_trained()
    assert node.enter_epoch(EPOCH_2)
    assert not node.is_trained()
    with pytest.raises(NodeError, match="run train"):
        node.model()  # an old epoch's model is never answered for
    report = node.train()
    assert report.retrained_from == {0: 0, 1: 0} and report.slices_trained == 8
    second = node.model()
    assert second.hash != first.hash and second.n_samples == first.n_samples
    # Deterministic per epoch: back to the first roster, back to the first bytes.
    node.enter_epoch(EPOCH_1)
    node.train()
    assert node.model().hash == first.hash
    assert build_for(tmp_path / "b.db", RECORDS, EPOCH_2).model().hash == second.hash


def test_forget_across_an_epoch_change_equals_retrain_under_the_new_epoch(
    tmp_path: Path,
) -> None:
    # As in a node's first round after an admission: the roster moved on, and the same
    # train request carries a forget. No checkpoint of the old epoch may be a start point.
    node = build_for(tmp_path / "a.db", RECORDS, EPOCH_1)
    old = checkpoint_hashes(node)
    victim = next(r for r in RECORDS if assign(r.id, "fed-test", 2, 4)[1] == 2)
    shard = assign(victim.id, "fed-test", 2, 4)[0]
    node.enter_epoch(EPOCH_2)
    result = node.forget([victim.id])

    scratch = build_for(tmp_path / "b.db", without({victim.id}), EPOCH_2)
    assert node.model().hash == scratch.model().hash
    assert result.model_hash_after == scratch.model().hash_hex
    assert checkpoint_hashes(node) == checkpoint_hashes(scratch)
    # The certificate's "before" and start point are the new epoch's, with the record.
    full = build_for(tmp_path / "c.db", RECORDS, EPOCH_2)
    assert result.model_hash_before == full.model().hash_hex
    (retrain,) = result.retrains
    start = full.store.checkpoint(shard, 1)
    assert start is not None and start.model_hash != old[(shard, 1)]
    assert retrain.from_checkpoint_hash == "0x" + start.model_hash.hex()


def test_node_model_is_the_averaged_logit_ensemble(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS)
    model = node.model()
    x = fake_embed([f"probe {i} great" for i in range(10)])
    heads = []
    for s in range(2):
        checkpoint = node.store.checkpoint(s, 3)
        assert checkpoint is not None
        heads.append((np.frombuffer(checkpoint.params, "<f4"), checkpoint.n_samples))
    total = sum(n for _, n in heads)
    ensemble = sum(
        n / total * (x @ vector_to_head(v, 384)[0] + vector_to_head(v, 384)[1]) for v, n in heads
    )
    w, b = vector_to_head(model.vector, 384)
    np.testing.assert_allclose(x @ w + b, ensemble, rtol=1e-5, atol=1e-5)
    assert model.n_samples == total == len(RECORDS)
    assert model.hash == model_hash(model.vector)


def test_vector_helpers_round_trip_and_evaluate() -> None:
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = np.array([1, 2, 3], dtype=np.float32)
    v = head_to_vector(w, b)
    w2, b2 = vector_to_head(v, 4)
    assert (w2 == w).all() and (b2 == b).all()
    x = np.eye(4, dtype=np.float32)
    assert list(predict(v, x)) == [2, 2, 2, 2]
    assert evaluate(v, x, np.array([2, 2, 0, 1])) == 0.5
    with pytest.raises(NodeError):
        vector_to_head(v, 5)
    assert (average([v, 3 * v], [1, 1]) == 2 * v).all()
    assert epochs_per_slice(36, 8) == 8  # 8 epochs × (8+1)/2 ≈ 36 passes over the shard


def test_trained_model_learns_something(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS)
    probe = make_records(60, prefix="probe")
    labels = np.array([node.config.labels.index(r.label) for r in probe])
    assert evaluate(node.model().vector, fake_embed([r.text for r in probe]), labels) > 0.9


def test_assignment_is_stable_and_balanced() -> None:
    ids = [f"id-{i}" for i in range(4000)]
    counts = np.zeros((4, 8))
    for rid in ids:
        s, k = assign(rid, "fed", 4, 8)
        counts[s, k] += 1
    assert counts.min() > 0.7 * 4000 / 32 and counts.max() < 1.3 * 4000 / 32
    assert assign("id-1", "fed", 4, 8) == assign("id-1", "fed", 4, 8)
    moved = sum(assign(r, "fed", 4, 8) != assign(r, "other-fed", 4, 8) for r in ids)
    assert moved > 3000  # the federation salt reshuffles everything


def test_forgotten_text_is_gone_from_the_files(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    canary_id = "canary-id-91c2"
    canary_text = "CANARY-7f3a9 great secret that must vanish"
    canary = Record(canary_id, canary_text, "positive")
    node = build_node(db, [*RECORDS, canary])
    embedding = fake_embed([canary_text])[0].astype("<f4").tobytes()
    raw = store_files(db)
    assert canary_text.encode() in raw and canary_id.encode() in raw and embedding in raw
    node.forget([canary_id])
    # Still open: the write-ahead log has already been truncated.
    raw = store_files(db)
    assert canary_text.encode() not in raw
    assert canary_id.encode() not in raw
    assert embedding not in raw
    node.close()
    assert canary_text.encode() not in store_files(db)


def test_unknown_id_changes_nothing(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS)
    before = node.model().hash
    with pytest.raises(NodeError, match=r"unknown record id.*'nope'"):
        node.forget([RECORDS[0].id, "nope"])
    assert node.model().hash == before
    assert node.store.locate([RECORDS[0].id])
    assert node.store.counts()["records"] == len(RECORDS)
    assert node.store.forget_history() == [] and node.pending_forgets() == 0
    with pytest.raises(NodeError, match="distinct"):
        node.forget([RECORDS[0].id, RECORDS[0].id])


def test_repeated_request_returns_the_stored_result(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS)
    first = node.forget([RECORDS[9].id], request_ids=["req-9"])
    again = node.forget([RECORDS[9].id], request_ids=["req-9"])
    assert again == first
    assert len(node.store.forget_history()) == 1
    with pytest.raises(NodeError, match="already used for another record"):
        node.forget([RECORDS[10].id], request_ids=["req-9"])


def test_model_refuses_to_answer_for_untrained_data(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS[:60])
    node.ingest(RECORDS[60:], embed=fake_embed)
    with pytest.raises(NodeError, match="run train"):
        node.model()
    node.train()
    assert node.model().n_samples == len(RECORDS)


def test_certificate_from_a_forget_verifies(tmp_path: Path) -> None:
    node = build_node(tmp_path / "a.db", RECORDS)
    victim = RECORDS[42]
    result = node.forget([victim.id], request_ids=["req-42"])
    cert = result.certificate("req-42").signed(NODE_KEY)
    assert cert.verify() == Account.from_key(NODE_KEY).address
    salt = node.store.record_salt(victim.id)
    assert cert.covers(victim.id, victim.text, victim.label, salt)
    assert not cert.covers(victim.id, victim.text, victim.label, bytes(32))
    assert cert.model_hash_after == node.model().hash_hex
    assert cert.new_slice_root == "0x" + node.store.slices()[(cert.shard, cert.slice)][1].hex()


CRASHING_FORGET = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from node.sisa import SisaNode

    db, marker, victim = sys.argv[1:4]
    node = SisaNode.open(db)

    def pause(shard, slice_):
        Path(marker).write_text(f"{shard} {slice_}")
        time.sleep(600)

    node.forget([victim], request_ids=["req-crash"], on_slice=pause)
    """
)


def test_forget_killed_mid_retrain_is_completed_on_restart(tmp_path: Path) -> None:
    db = tmp_path / "node.db"
    victim = next(r for r in RECORDS if assign(r.id, "fed-test", 2, 4)[1] == 0)
    build_node(db, RECORDS).close()
    marker = tmp_path / "paused"
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_FORGET)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(db), str(marker), victim.id], env=env, cwd=REPO_ROOT
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the forgetting process died before pausing"
            assert time.monotonic() < deadline, "the forgetting process never paused"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert marker.read_text() == f"{assign(victim.id, 'fed-test', 2, 4)[0]} 0"

    interrupted = SisaNode.open(db, recover=False)
    assert interrupted.pending_forgets() == 1  # deleted and journaled, not yet retrained
    assert interrupted.forget_result("req-crash") is None
    with pytest.raises(NodeError, match="run train"):
        interrupted.model()
    interrupted.close()
    assert victim.text.encode() not in store_files(db)

    restarted = SisaNode.open(db)  # completes the journaled forget
    assert restarted.pending_forgets() == 0
    result = restarted.forget_result("req-crash")
    assert result is not None
    scratch = build_node(tmp_path / "scratch.db", without({victim.id}))
    assert restarted.model().hash == scratch.model().hash
    assert result.model_hash_after == scratch.model().hash_hex
    assert result.certificate("req-crash").signed(NODE_KEY).verify()


def test_importing_the_node_modules_loads_neither_torch_nor_transformers() -> None:
    code = (
        "import sys, node.store, node.sisa, protocol.features, node.commands, protocol.certificate;"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_forget_certificate_times_the_forget_not_torchs_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's first switch to deterministic algorithms costs seconds once per process (a
    CLI forget measured 3-7 s for a 0.05 s forget); it is paid before the clock starts."""
    import torch

    node = build_node(tmp_path / "a.db", RECORDS, small_config())
    real = torch.use_deterministic_algorithms
    first_call = [True]

    def slow_the_first_time(mode: bool, **kwargs: bool) -> None:
        if first_call[0]:
            first_call[0] = False
            time.sleep(2.0)  # what a fresh process pays
        real(mode, **kwargs)

    monkeypatch.setattr(torch, "use_deterministic_algorithms", slow_the_first_time)
    result = node.forget([RECORDS[5].id])
    assert not first_call[0], "the forget never switched torch to deterministic algorithms"
    assert result.wall_time_ms < 2000, result.wall_time_ms


def skewed_records(n: int, prefix: str = "skew") -> list[Record]:
    """Mostly negative records, one in ten positive, one in twenty neutral (like tweets)."""
    labels = [
        "positive" if i % 10 == 3 else "neutral" if i % 20 == 7 else "negative" for i in range(n)
    ]
    return [
        Record(f"{prefix}-{i:04d}", f"{WORDS[lab]} item {i:04d}", lab)
        for i, lab in enumerate(labels)
    ]


def weak_embed(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """The fake encoder with a faint sentiment signal, so the class prior matters."""
    rows = fake_embed(
        [t.replace("awful", "").replace("okay", "").replace("great", "") for t in texts]
    )
    for i, text in enumerate(texts):
        for axis, word in enumerate(WORDS.values()):
            if word in text:
                rows[i, axis] += 0.08
    return rows


def test_balanced_forget_of_a_minority_record_equals_retrain_from_scratch(
    tmp_path: Path,
) -> None:
    # Forgetting a positive changes the class counts, so every later slice step's class
    # weights change: the retrain must recompute them exactly as a fresh training does.
    records = skewed_records(160)
    config = small_config(class_weight="balanced")
    node = build_node(tmp_path / "a.db", records, config)
    victims = {records[3].id, records[7].id}  # a positive and a neutral
    node.forget(sorted(victims))
    scratch = build_node(tmp_path / "b.db", [r for r in records if r.id not in victims], config)
    assert node.model().hash == scratch.model().hash
    assert checkpoint_hashes(node) == checkpoint_hashes(scratch)
    unweighted = build_node(tmp_path / "c.db", records, small_config(class_weight="none"))
    assert unweighted.model().hash != build_node(tmp_path / "d.db", records, config).model().hash


def test_balanced_training_recovers_the_minority_class(tmp_path: Path) -> None:
    train, test = skewed_records(600), skewed_records(300, "held")
    x_test = weak_embed([r.text for r in test])
    y_test = np.array([["negative", "neutral", "positive"].index(r.label) for r in test])
    recall = {}
    for weighting in ("none", "balanced"):
        node = SisaNode.create(tmp_path / f"{weighting}.db", small_config(class_weight=weighting))
        node.ingest(train, embed=weak_embed)
        node.train()
        predicted = predict(node.model().vector, x_test)
        recall[weighting] = float(np.mean(predicted[y_test == 2] == 2))
    assert recall["balanced"] >= recall["none"] + 0.3, recall


def test_a_store_from_before_class_weights_keeps_its_configuration_digest() -> None:
    from node.store import NodeConfig
    from protocol.canonical import canonical_json

    old = {k: v for k, v in small_config(class_weight="none").to_json().items()}
    assert "class_weight" not in old
    config = NodeConfig.from_json(old)
    assert config.class_weight == "none"
    assert config.digest() == keccak256(canonical_json(old))
    assert NodeConfig.from_json(small_config().to_json()).class_weight == "balanced"
    with pytest.raises(NodeError, match="class weight"):
        small_config(class_weight="inverse")
