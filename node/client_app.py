"""The node's Flower ClientApp: routes each Lethe stage to its handler in ``node.stages``.

Kept thin and quick to import: a ClientApp may be started per message, and all state is
in the node's own SQLite file, reopened at each stage.
"""

import logging
from collections.abc import Callable

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from node.runtime import CONFIG_KEY, runtime_for
from node.stages import answer
from protocol.errors import ProtocolError
from protocol.messages import (
    AGGREGATE,
    APPROVE,
    SHARE,
    TRAIN,
    from_record_dict,
    to_record_dict,
)

app = ClientApp()
logger = logging.getLogger("lethe.node")


def _handler(stage: str) -> Callable[[Message, Context], Message]:
    def run(msg: Message, context: Context) -> Message:
        runtime = runtime_for(str(context.node_config.get(CONFIG_KEY, "")))
        try:
            reply = answer(runtime, stage, from_record_dict(msg.content))
        except ProtocolError as exc:
            logger.warning("%s: refused: %s", stage, exc)
            error = Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"refused: {exc}")
            return Message(error, reply_to=msg)
        return Message(to_record_dict(reply), reply_to=msg)

    run.__name__ = stage.replace(".", "_")
    return run


app.train()(_handler(TRAIN))
app.train("share")(_handler(SHARE))
app.train("aggregate")(_handler(AGGREGATE))
app.query("approve")(_handler(APPROVE))
