"""Datasets by CID: a CSV fetched from the content store, checked against its CID, then read
like any CSV; optionally only node i of n's share of it.

A federation that names its data by CID knows every node reads the same bytes: the store
hashes what it returns against the CID (``ContentStore.get``), so a tampered or truncated
copy is an error, never a silently different dataset. The shared test split is named the
same way, so every node evaluates on identical records.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from node.csv_input import CsvInput

if TYPE_CHECKING:
    from protocol.store import ContentStore

T = TypeVar("T")


@contextmanager
def fetched_csv(store: ContentStore, cid: str, template: CsvInput) -> Iterator[CsvInput]:
    """``template`` (columns, labels, encoding) read from the verified bytes of ``cid``.

    The bytes live in a private temporary file while the block runs (CsvInput streams from a
    file: a large dataset is never held as Python objects).
    """
    data = store.get(cid)  # StoreError unless the bytes hash to the CID
    with tempfile.TemporaryDirectory(prefix="lethe-cid-") as tmp:
        path = Path(tmp) / f"{cid}.csv"
        path.write_bytes(data)
        yield replace(template, path=path)


@dataclass(frozen=True)
class Partition:
    """Node ``index`` of ``count`` (1-based): rows index-1, index-1+count, … in file order.

    Every node naming the same CID and count gets a disjoint share, and together the shares
    are the whole file.
    """

    index: int = 1
    count: int = 1

    def size(self, total: int) -> int:
        """How many of ``total`` records fall in this share."""
        return len(range(self.index - 1, total, self.count))

    def select(self, records: Iterator[T]) -> Iterator[T]:
        for position, record in enumerate(records):
            if position % self.count == self.index - 1:
                yield record
