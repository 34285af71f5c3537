"""Rebuild the out-of-domain evaluation set from the package that ships it.

The set (``bench/data/amazon_review_snippets.csv``, provenance beside it) is the Amazon
review snippets of Hutto & Gilbert's VADER study (ICWSM 2014), shipped inside the
``vaderSentiment`` 3.3.2 source distribution on PyPI
(``additional_resources/hutto_ICWSM_2014.tar.gz``, MIT licence). Each snippet carries the
mean of 20 independent human ratings on −4 … +4; the three labels follow one rule fixed
before any model was scored on the set: mean ≥ +0.5 → positive, ≤ −0.5 → negative, else
neutral. A text that occurs more than once keeps its first row, so a text has one label.

``python -m bench.reviews_build vaderSentiment-3.3.2.tar.gz`` (from ``pip download
vaderSentiment==3.3.2 --no-deps --no-binary :all:``) checks the archive's SHA-256 and
rewrites the CSV; the result is byte-identical to the committed one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import sys
import tarfile
from pathlib import Path

SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
MEMBER = "hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt"
THRESHOLD = 0.5
"""Half a step of the raters' scale away from "[0] Neutral (or Neither, N/A)"."""
OUT = Path(__file__).resolve().parent / "data" / "amazon_review_snippets.csv"


def label_of(mean_rating: float) -> str:
    """The three-class label of a snippet's mean human rating."""
    if mean_rating >= THRESHOLD:
        return "positive"
    if mean_rating <= -THRESHOLD:
        return "negative"
    return "neutral"


def rows_from_sdist(data: bytes) -> list[tuple[str, str, str, str]]:
    """``(id, label, mean_rating, text)`` of every distinct snippet, in the file's order."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"archive SHA-256 {digest} is not vaderSentiment 3.3.2's {SDIST_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as outer:
        inner_file = outer.extractfile(INNER)
        if inner_file is None:
            raise SystemExit(f"{INNER} is missing from the archive")
        with tarfile.open(fileobj=io.BytesIO(inner_file.read())) as inner:
            member = inner.extractfile(MEMBER)
            if member is None:
                raise SystemExit(f"{MEMBER} is missing from {INNER}")
            lines = member.read().decode("utf-8-sig").splitlines()
    seen: set[str] = set()
    rows = []
    for line in lines:
        if not line.strip():
            continue
        snippet_id, rating, text = line.split("\t", 2)
        text = text.strip()
        if text in seen:
            continue
        seen.add(text)
        rows.append((snippet_id, label_of(float(rating)), rating, text))
    return rows


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bench.reviews_build vaderSentiment-3.3.2.tar.gz")
    rows = rows_from_sdist(Path(sys.argv[1]).read_bytes())
    with OUT.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["id", "label", "mean_rating", "text"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} snippets to {OUT}")


if __name__ == "__main__":
    main()
