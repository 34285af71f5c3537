"""The coordinator's Flower ServerApp: secure rounds, then forget requests until stopped.

The run config names the coordinator's JSON config (``coordinator-config``); the loop
ends when the ``stop`` control flag is set in the coordinator database (``lethe stop``
or the demo's shutdown), so a forget request is never cut off mid-way by a kill.
"""

import logging
import sys
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from coordinator.config import CoordinatorConfig
from coordinator.health import Heartbeat
from coordinator.queue import CoordinatorDB
from coordinator.rounds import Coordinator
from coordinator.transport import FlowerTransport
from infra import flower, logs

app = ServerApp()


logger = logging.getLogger("lethe.coordinator")


def _report(line: str) -> None:
    logger.info(line)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation described by the run config's ``coordinator-config`` file."""
    from protocol.ledger import Ledger
    from protocol.store import open_store

    config = CoordinatorConfig.load(str(context.run_config["coordinator-config"]))
    # The ServerApp's stdout goes to Flower's log stream; keep a file beside the queue too.
    handler = logging.FileHandler(Path(config.db).with_name("coordinator.log"))
    handler.setFormatter(logs.formatter("coordinator", "%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("lethe").addHandler(handler)
    logging.getLogger("lethe").setLevel(logging.INFO)
    logs.configure("coordinator", "[lethe] %(message)s", stream=sys.stdout)
    # httpx logs every request at INFO: with replies pulled every poll_s that was ~20
    # lines a second, each one shipped to the SuperLink's log store by another request.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    flower.tune_grid_object_pulls(config.poll_s)
    db = CoordinatorDB(Path(config.db))
    db.set_control("stopped", "0")
    ledger = Ledger(
        config.rpc_url,
        config.contract,
        private_key=config.coordinator_key(),
        deployment_block=config.deployment_block,
    )
    coordinator = Coordinator(
        config,
        FlowerTransport(grid, poll_s=config.poll_s),
        ledger,
        open_store(config.store),
        db,
        report=_report,
    )
    heartbeat = Heartbeat(db, grid.get_node_ids).start()
    coordinator.on_step = heartbeat.step
    try:
        coordinator.serve(stop=lambda: db.get_control("stop") == "1")
    except BaseException:
        # Flower's log stream may be gone with the SuperLink: keep the cause in our file.
        logger.exception("the coordinator loop ended by an error")
        raise
    finally:
        heartbeat.stop()
        db.set_control("stopped", "1")
        _report("coordinator stopped")
