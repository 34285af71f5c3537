"""``lethe-node`` that dies like a killed machine right after answering one stage (tests only).

``python -m tests.faulty_node STAGE run …``: the node answers the first ``STAGE`` task,
waits for the SuperNode to forward the reply, then SIGKILLs its whole process group
(SuperNode included). Fault injection lives here, never in the shipped node.
"""

import os
import signal
import sys
import time

from node import worker
from node.cli import main


def _die_after(stage: str) -> None:
    run_task = worker.run_task

    def run_then_die(config: worker.WorkerConfig, token: str) -> tuple[bool, str]:
        ok, done = run_task(config, token)
        if done == stage:
            time.sleep(2.0)
            os.killpg(os.getpgid(0), signal.SIGKILL)
        return ok, done

    worker.run_task = run_then_die


if __name__ == "__main__":
    _die_after(sys.argv.pop(1))
    main()
