"""What every member of a federation must agree on, and its defaults.

A node's SISA layout (shards × slices) fixes which models it can release: round k of
the initial rounds releases the models trained through slice k. A node built with another
layout, or for another federation, would commit models the round does not mean, so it
refuses the round with a message saying how to fix it.
"""

from dataclasses import dataclass

from protocol.errors import ProtocolError

DEFAULT_SHARDS = 1
DEFAULT_SLICES = 4
"""The one default slice count: node stores, the coordinator and the local launcher."""
DEFAULT_LABELS = ("negative", "neutral", "positive")
"""The default classes, in head order: nodes train them, the coordinator scores feedback."""


@dataclass(frozen=True)
class FederationLayout:
    """The federation id and the SISA layout every node of the federation uses."""

    federation_id: str
    shards: int = DEFAULT_SHARDS
    slices: int = DEFAULT_SLICES

    def check_member(self, federation_id: str, shards: int, slices: int) -> None:
        """ProtocolError naming every way a node's own layout disagrees with this one."""
        problems = []
        if federation_id != self.federation_id:
            problems.append(f"its data is for federation {federation_id!r}")
        if (shards, slices) != (self.shards, self.slices):
            problems.append(
                f"it has {shards} shard(s) × {slices} slices, the federation "
                f"{self.shards} × {self.slices}"
            )
        if problems:
            raise ProtocolError(
                f"this node does not fit federation {self.federation_id!r}: "
                + "; ".join(problems)
                + f" (re-ingest with --federation {self.federation_id} "
                f"--shards {self.shards} --slices {self.slices})"
            )
