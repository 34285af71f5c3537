"""The node's Flower ClientApp: routes each Lethe stage to its handler in ``node.stages``.

Kept thin and quick to import: a ClientApp may be started per message, and all state is
in the node's own SQLite file, reopened at each stage.
"""

from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from node.runtime import CONFIG_KEY, runtime_for
from node.stages import HANDLERS
from protocol.messages import (
    AGGREGATE,
    APPROVE,
    SHARE,
    TRAIN,
    from_record_dict,
    to_record_dict,
)

app = ClientApp()


def _handler(stage: str) -> Callable[[Message, Context], Message]:
    handle = HANDLERS[stage]

    def run(msg: Message, context: Context) -> Message:
        runtime = runtime_for(str(context.node_config.get(CONFIG_KEY, "")))
        reply = handle(runtime, from_record_dict(msg.content))
        return Message(to_record_dict(reply), reply_to=msg)

    run.__name__ = stage.replace(".", "_")
    return run


app.train()(_handler(TRAIN))
app.train("share")(_handler(SHARE))
app.train("aggregate")(_handler(AGGREGATE))
app.query("approve")(_handler(APPROVE))
