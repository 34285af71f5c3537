"""Memory of a streaming CSV ingest: a 50 MB CSV of short rows under 500 MB of RSS.

``python -m bench.ingest_memory`` (``make bench-ingest-memory``) writes a bank-shaped CSV of
short rows (``account_number,account_name,timestamp,feedback_text,ground_truth``, labels
spelled ``Positive``/``NEGATIVE``/``neutral``, about 50 MB) and ingests it with the node's
own code (``node.csv_input.CsvInput`` with column mapping, then ``SisaNode.ingest_stream``),
each measured phase in a fresh process whose peak resident set size is read from the
kernel (``wait4``'s ``ru_maxrss``, exact, not sampled). It writes
``bench/results/ingest_memory.json``.

What is measured, exactly:

- ``stream_store``: every row of the file is read, checked (the whole-file scan with its
  duplicate-id check), and stored with a 384-float embedding, in one transaction, through
  the very code the command runs, **except that the embedding is a constant vector**:
  embedding 600 000 texts with MiniLM takes hours on two cores, so this phase measures the
  memory of the read/parse/check/store path for all rows, which is what grew with the file
  before (the whole file was held as text, rows and records at once);
- ``real_encoder``: the same file and path with the real int8 MiniLM encoder, on the first
  ``--embed-rows`` rows only (default 3 000): the encoder's own memory and the per-chunk
  embedding memory (bounded by ``INGEST_CHUNK`` texts, whatever the file), and the
  throughput that projects the whole file's embedding time.

The bound holds if both phases stay under ``limit_mb``: memory is bounded by the chunk,
and the phases share nothing that grows with the row count.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
LIMIT_MB = 500
TARGET_BYTES = 50 * 1000 * 1000
COLUMNS = ("--id-col", "account_number", "--text-col", "feedback_text")

_TEXTS = {
    "NEGATIVE": ["App crashed again", "Fees too high", "Rude staff", "Card blocked abroad"],
    "neutral": ["Changed address", "Statement received", "New PIN asked", "Opening hours?"],
    "Positive": ["Great service", "Love the app", "Quick transfer", "Helpful advisor"],
}
_NAMES = ["Amélie Durand", "João Silva", "Zoë O'Brien", "Björn Larsson", "Seán Murphy"]


def write_csv(path: Path, target_bytes: int) -> int:
    """A bank-shaped CSV of short rows, about ``target_bytes`` long; return its row count."""
    labels = list(_TEXTS)
    rows = 0
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write("account_number,account_name,timestamp,feedback_text,ground_truth\r\n")
        while out.tell() < target_bytes:
            label = labels[rows % 3]
            text = _TEXTS[label][(rows // 3) % 4]
            out.write(
                f"GB{29 + rows % 7:02d}LTHE{rows:010d},{_NAMES[rows % 5]},"
                f'2026-11-{1 + rows % 28:02d}T09:{rows % 60:02d}:00Z,"{text}, #{rows}",{label}\r\n'
            )
            rows += 1
    return rows


def _child(phase: str, csv_path: Path, db: Path, embed_rows: int, out: Path) -> None:
    """One measured phase, in its own process."""
    from node.csv_input import CsvInput
    from node.sisa import SisaNode
    from node.store import NodeConfig

    started = time.perf_counter()
    source = CsvInput(
        csv_path, id_col="account_number", text_col="feedback_text", label_col="ground_truth"
    )
    total = source.scan()
    scanned = time.perf_counter()
    result: dict[str, Any] = {"rows_in_file": total, "scan_seconds": round(scanned - started, 2)}
    with SisaNode.create(db, NodeConfig("bench-memory", "node-1")) as node:
        if phase == "stream_store":
            unit = np.zeros((1, 384), dtype=np.float32)
            unit[0, 0] = 1.0

            def constant(texts: Any) -> np.ndarray:
                return np.repeat(unit, len(texts), axis=0)

            report = node.ingest_stream(source.records(), embed=constant, progress=False)
            result["embedder"] = "constant vector (no model): the read/parse/check/store path"
        else:
            from protocol.features import default_encoder

            default_encoder().load()
            loaded = time.perf_counter()
            report = node.ingest_stream(
                itertools.islice(source.records(), embed_rows), progress=False
            )
            embed_seconds = time.perf_counter() - loaded
            result["embedder"] = "all-MiniLM-L6-v2 int8 ONNX (the real encoder)"
            result["embed_seconds"] = round(embed_seconds, 2)
            result["texts_per_s"] = round(report.added / embed_seconds, 1)
            result["projected_full_file_hours"] = round(
                total / (report.added / embed_seconds) / 3600, 2
            )
        result["rows_stored"] = report.added
        result["stored_records"] = node.store.counts()["records"]
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["db_bytes"] = db.stat().st_size
    out.write_text(json.dumps(result))


def _measure(phase: str, csv_path: Path, tmp: Path, embed_rows: int) -> dict[str, Any]:
    """Run a phase in a fresh process; add its exact peak RSS from the kernel."""
    out = tmp / f"{phase}.json"
    db = tmp / f"{phase}.sqlite"
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.ingest_memory",
            "--child",
            phase,
            "--csv",
            str(csv_path),
            "--db",
            str(db),
            "--embed-rows",
            str(embed_rows),
            "--out",
            str(out),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"phase {phase} failed with exit code {child.returncode}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: KiB
    for path in tmp.glob(f"{phase}.sqlite*"):
        path.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", choices=("stream_store", "real_encoder"))
    parser.add_argument("--csv", type=Path)
    parser.add_argument("--db", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--embed-rows", type=int, default=3000)
    parser.add_argument("--megabytes", type=float, default=TARGET_BYTES / 1e6)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.csv, args.db, args.embed_rows, args.out)
        return
    with tempfile.TemporaryDirectory(prefix="lethe-bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        csv_path = tmp / "bank-feedback.csv"
        rows = write_csv(csv_path, int(args.megabytes * 1e6))
        size = csv_path.stat().st_size
        print(f"wrote {size / 1e6:.1f} MB, {rows} rows; measuring …", flush=True)
        phases = {
            phase: _measure(phase, csv_path, tmp, args.embed_rows)
            for phase in ("stream_store", "real_encoder")
        }
    for name, phase in phases.items():
        print(
            f"{name}: peak RSS {phase['peak_rss_mb']} MB, {phase['rows_stored']} rows stored "
            f"in {phase['seconds']} s",
            flush=True,
        )
    result = {
        "csv_bytes": size,
        "csv_rows": rows,
        "limit_mb": LIMIT_MB,
        "phases": phases,
        "peak_rss_mb": max(p["peak_rss_mb"] for p in phases.values()),
        "within_limit": all(p["peak_rss_mb"] <= LIMIT_MB for p in phases.values()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS / 'ingest_memory.json'}")


if __name__ == "__main__":
    main()
