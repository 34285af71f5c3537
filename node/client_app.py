"""The node's Flower ClientApp: routes each Lethe stage to its handler in ``node.stages``.

Kept thin and quick to import: a ClientApp may be started per message, and all state is
in the node's own SQLite file, reopened at each stage.
"""

import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context, Message
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from infra.logs import log_context
from node.metrics import answering
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

MAX_LOGGED_IDS = 64
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
app = ClientApp()
logger = logging.getLogger("lethe.node")


def _ids(content: Mapping[str, object]) -> dict[str, Any]:
    """The round and forget request ids a request's header names, for its log lines;
    unchecked input, so only well-formed values (the stage's own checks come after)."""
    try:
        header = json.loads(str(content.get("header", "{}")))
    except ValueError:
        header = {}
    if not isinstance(header, dict):
        header = {}
    round_no, entries = header.get("round"), header.get("forget_requests")
    ids = [
        e["request_id"]
        for e in (entries if isinstance(entries, list) else [])[:MAX_LOGGED_IDS]
        if isinstance(e, dict)
        and isinstance(e.get("request_id"), str)
        and _REQUEST_ID.fullmatch(e["request_id"])
    ]
    return {"round_no": round_no if type(round_no) is int else None, "request_ids": ids}


def _handler(stage: str) -> Callable[[Message, Context], Message]:
    def run(msg: Message, context: Context) -> Message:
        runtime = runtime_for(str(context.node_config.get(CONFIG_KEY, "")))
        try:
            with answering(stage, ProtocolError):
                content = from_record_dict(msg.content)
                ids = _ids(content)
                with log_context(**ids):
                    reply = answer(runtime, stage, content)
                    if ids["request_ids"]:
                        logger.info(
                            "%s answered for forget %s", stage, ", ".join(ids["request_ids"])
                        )
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
