"""``lethe-node`` that fails like a killed machine or a hung app after one stage (tests only).

``python -m tests.faulty_node STAGE [die|hang] run …``: the node answers the first ``STAGE``
task, waits for the SuperNode to forward the reply, then either SIGKILLs its whole
process group, SuperNode included (``die``, the default), or never serves another task
while its SuperNode stays connected and keeps beating (``hang``: alive but silent, which
no heartbeat reveals). Fault injection lives here, never in the shipped node.
"""

import os
import signal
import sys
import time

from node import worker
from node.cli import main


def _fail_after(stage: str, how: str) -> None:
    run_task = worker.run_task

    def run_then_fail(config: worker.WorkerConfig, token: str) -> tuple[bool, str]:
        ok, done = run_task(config, token)
        if done == stage:
            time.sleep(2.0)
            if how == "hang":
                time.sleep(3600)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return ok, done

    worker.run_task = run_then_fail


if __name__ == "__main__":
    failing_stage = sys.argv.pop(1)
    mode = sys.argv.pop(1) if sys.argv[1] in ("die", "hang") else "die"
    _fail_after(failing_stage, mode)
    main()
