"""Baseline ClientApp: one FedAvg train handler, plain or under Flower's ``secaggplus_mod``.

The update is the received global vector plus a small random step, so both rounds move
a vector of exactly the size the ServerApp sent (Lethe's model size) and computation is
negligible: what the baselines measure is Flower's message stages, as shipped.
"""

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS
from flwr.compat.common import recorddict_compat as compat

app = ClientApp()

STEP = 0.01


def local_update(
    global_vector: npt.NDArray[np.float32], context: Context
) -> tuple[npt.NDArray[np.float32], int]:
    """The node's new model (same size as ``global_vector``) and its sample count."""
    rng = np.random.default_rng(context.node_id)
    step = rng.normal(0.0, STEP, global_vector.shape).astype(np.float32)
    return global_vector.astype(np.float32) + step, int(context.run_config["num-examples"])


def _plain(msg: Message, context: Context) -> Message:
    """Message-API FedAvg: ``arrays`` in, ``arrays`` + ``num-examples`` out."""
    vector, n = local_update(msg.content.array_records["arrays"].to_numpy_ndarrays()[0], context)
    content = RecordDict(
        {"arrays": ArrayRecord([vector]), "metrics": MetricRecord({"num-examples": n})}
    )
    return Message(content, reply_to=msg)


def _legacy_fit(msg: Message, context: Context) -> Message:
    """The same update as FitIns → FitRes, the form ``secaggplus_mod`` masks."""
    fit_ins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    vector, n = local_update(parameters_to_ndarrays(fit_ins.parameters)[0], context)
    fit_res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([vector]), n, {})
    return Message(compat.fitres_to_recorddict(fit_res, keep_input=False), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """SecAgg+ stages carry the protocol's config record; anything else is plain FedAvg."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, context, _legacy_fit)
    return _plain(msg, context)
