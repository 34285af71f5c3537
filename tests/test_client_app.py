"""The node's ClientApp answers a malformed Flower message with an error reply, never a crash.

Specifications:
- at every stage, content that is not a Lethe record, or a record with a missing, extra
  or ill-typed field, gets an error reply (Flower's "ClientApp raised" code) naming the
  problem, and the node's runtime is not even opened.
"""

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.supercore.task_identity import TaskIdentity

import node.client_app as client_app
from protocol.messages import STAGES

GARBAGE = {
    "not Lethe's": RecordDict({"other": ConfigRecord({"x": 1})}),
    "no header": RecordDict({"lethe": ConfigRecord({"blob:roster": b"x"})}),
    "not JSON": RecordDict({"lethe": ConfigRecord({"header": "{"})}),
    "ill-typed": RecordDict({"lethe": ConfigRecord({"header": '{"round": "one"}'})}),
    "a number": RecordDict({"lethe": ConfigRecord({"header": 7})}),
}


class _Untouchable:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the runtime was used ({name}) for a malformed request")


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("case", list(GARBAGE))
def test_malformed_message_gets_an_error_reply(
    monkeypatch: pytest.MonkeyPatch, stage: str, case: str
) -> None:
    monkeypatch.setattr(client_app, "runtime_for", lambda _path: _Untouchable())
    for field in ("_task_id", "_run_id", "_node_id"):  # as the task runner sets them
        monkeypatch.setattr(TaskIdentity, field, 1)
    message = Message(GARBAGE[case], dst_node_id=1, message_type=stage)
    context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})
    reply = client_app.app(message, context)
    assert reply.has_error()
    assert reply.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert str(reply.error.reason).startswith("refused: ")
