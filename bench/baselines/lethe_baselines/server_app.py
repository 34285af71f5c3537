"""Baseline ServerApp: one plain FedAvg round or one SecAgg+ round, timed, as Flower ships them.

Run config (``pyproject.toml``): ``mode`` is ``plaintext`` (Message-API ``FedAvg``: train
on every node, aggregate) or ``secaggplus`` (``DefaultWorkflow`` with
``SecAggPlusWorkflow``: setup, share keys, collect masked vectors — the nodes train here —
and unmask, then ``aggregate_fit``). Both use ``Grid.send_and_receive`` and Flower's
defaults, polling included; the clock starts once all ``nodes`` are connected and stops
when the aggregate is in hand. The figures go as JSON to ``result-path``.

With ``poll-s`` > 0 the same workflows run over :class:`BriskGrid` and Lethe's object-pull
back-off instead: Flower's rounds on Lethe's transport, a control measurement.
"""

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.serverapp import Grid, ServerApp

app = ServerApp()

MODES = ("plaintext", "secaggplus")


class BriskGrid:
    """A ``Grid`` whose ``send_and_receive`` pulls replies every ``poll_s`` instead of 3 s.

    The same push/pull-and-wait contract as Flower's, at the pace of Lethe's transport.
    """

    def __init__(self, grid: Grid, poll_s: float) -> None:
        self._grid = grid
        self._poll_s = poll_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        waiting = set(self._grid.push_messages(messages))
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        replies: list[Message] = []
        while waiting and time.monotonic() < deadline:
            pulled = list(self._grid.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(m.metadata.reply_to_message_id for m in pulled)
            if waiting:
                time.sleep(self._poll_s)
        return replies


def wait_for_nodes(grid: Grid, nodes: int, timeout: float) -> None:
    """Block until ``nodes`` SuperNodes are connected (not part of the timed round)."""
    deadline = time.monotonic() + timeout
    while len(list(grid.get_node_ids())) < nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {nodes} nodes connected within {timeout:.0f} s")
        time.sleep(0.2)


def plaintext_round(grid: Grid, d: int, nodes: int, timeout: float) -> dict[str, Any]:
    """One Message-API FedAvg train round: what ``FedAvg.start`` does per round."""
    from flwr.serverapp.strategy import FedAvg

    strategy = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=0.0,
        min_train_nodes=nodes,
        min_available_nodes=nodes,
    )
    arrays = ArrayRecord([np.zeros(d, dtype=np.float32)])
    start = time.perf_counter()
    messages = strategy.configure_train(1, arrays, ConfigRecord(), grid)
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    aggregate, _ = strategy.aggregate_train(1, replies)
    seconds = time.perf_counter() - start
    if aggregate is None:
        raise RuntimeError("FedAvg produced no aggregate")
    return {
        "seconds": seconds,
        "replies": sum(not r.has_error() for r in replies),
        "aggregate_size": int(aggregate.to_numpy_ndarrays()[0].size),
    }


def secaggplus_round(grid: Grid, context: Context, d: int, nodes: int) -> dict[str, Any]:
    """One round of ``SecAggPlusWorkflow`` (the fit workflow of ``DefaultWorkflow``)."""
    from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.compat.common import recorddict_compat as compat
    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

    class TimedSecAggPlus(SecAggPlusWorkflow):
        """SecAgg+ as shipped; only the clock and the count of summed vectors added."""

        seconds = 0.0
        replies = 0
        completed = False

        def __call__(self, grid: Grid, context: Context) -> None:
            start = time.perf_counter()
            super().__call__(grid, context)
            self.seconds = time.perf_counter() - start

        def unmask_stage(self, grid: Grid, context: Any, state: Any) -> bool:
            self.replies = len(state.legacy_results)
            self.completed = super().unmask_stage(grid, context, state)
            return self.completed

    cfg = context.run_config
    strategy = FedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=nodes,
        min_available_clients=nodes,
        initial_parameters=ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]),
    )
    workflow = TimedSecAggPlus(
        num_shares=int(cfg["num-shares"]),
        reconstruction_threshold=int(cfg["reconstruction-threshold"]),
        timeout=float(cfg["timeout"]),
    )
    legacy = LegacyContext(context, config=ServerConfig(num_rounds=1), strategy=strategy)
    DefaultWorkflow(fit_workflow=workflow)(grid, legacy)
    if not workflow.completed:
        raise RuntimeError("the SecAgg+ round did not complete; see the ServerApp log")
    params = compat.arrayrecord_to_parameters(
        legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True
    )
    return {
        "seconds": workflow.seconds,
        "replies": workflow.replies,
        "aggregate_size": int(parameters_to_ndarrays(params)[0].size),
    }


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the round named by ``mode`` and write its timing to ``result-path``."""
    cfg = context.run_config
    mode, out = str(cfg["mode"]), str(cfg["result-path"])
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not out:
        raise ValueError("set result-path in the run config")
    d, nodes, timeout = int(cfg["d"]), int(cfg["nodes"]), float(cfg["timeout"])
    poll_s = float(cfg["poll-s"])
    if poll_s > 0:
        from infra.flower import tune_grid_object_pulls

        tune_grid_object_pulls(poll_s)
        grid = cast(Grid, BriskGrid(grid, poll_s))
    wait_for_nodes(grid, nodes, timeout)
    if mode == "plaintext":
        result = plaintext_round(grid, d, nodes, timeout)
    else:
        result = secaggplus_round(grid, context, d, nodes)
    result.update(mode=mode, poll_s=poll_s, d=d, nodes=nodes, run_id=context.run_id)
    # Whole or not at all: the benchmark reads the file as soon as it exists.
    partial = Path(out).with_name(Path(out).name + ".partial")
    partial.write_text(json.dumps(result, indent=2))
    partial.replace(out)
