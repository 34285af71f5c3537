"""A realistic bank feedback export, written by hand for the tests: what an organisation uploads.

Columns ``account_number,account_name,timestamp,feedback_text,ground_truth``; labels in
the export's own spelling (``Positive``, ``NEGATIVE``, ``neutral``); names with accents,
texts with commas, curly quotes, euro signs and line breaks inside quoted fields.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

NEGATIVE = [
    "The app logged me out three times while I was paying rent. Useless.",
    "I waited 55 minutes on hold and nobody answered, terrible service",
    "You charged me a €35 overdraft fee without any warning. Disgusting.",
    "My card was blocked abroad and the branch refused to help, awful experience",
    "Transfers take days, the fees are outrageous and support is rude",
    "Worst bank I have ever used, closing my account this week",
    "The mortgage adviser never called back. I am very disappointed.",
    "Your “instant” payments are anything but instant – two days late again",
    "Fraud team froze my salary and nobody explains why, I hate this",
    "The new update broke the login, cannot see my balance at all",
    "Hidden charges everywhere, I feel cheated",
    "Staff at the Leeds branch were rude and unhelpful",
    "Chatbot is useless, it keeps sending me in circles",
    "I was double charged and the refund still has not arrived, awful",
]
NEUTRAL = [
    "I changed my address in the app.",
    "Statement for March received.",
    "Please send me a paper copy of my contract",
    "What are the opening hours of the Bristol branch?",
    "I updated my phone number today",
    "Moved savings to the fixed term account",
    "Is the card reader needed for online banking?",
    "Requested a new PIN by post",
    "Account opened last Tuesday, card arrived Friday",
    "How do I add a joint account holder?",
    "I would like to know the exchange rate for dollars",
    "Direct debit set up for the electricity bill",
]
POSITIVE = [
    "Fantastic service, the advisor sorted my loan in ten minutes!",
    "Love the new app, so easy to use. Thank you!",
    "Great support team, they fixed my card issue straight away",
    "Best bank I have had, friendly staff and no silly fees",
    "Really happy with the savings rate, excellent",
    "The branch staff in Cardiff were brilliant and very helpful",
    "Instant notifications are great, I love this feature",
    "Quick, friendly and helpful – thanks Zoë!",
    "Mortgage approved fast, amazing experience",
    "Excellent customer service, thank you so much",
    "Your fraud team was awesome, money back in a day",
    "Super smooth account switch, very pleased",
]
NAMES = [
    "Amélie Durand",
    "João Silva",
    "Zoë O'Brien",
    "Björn Larsson",
    "Chloé Martin",
    "Seán Murphy",
    "Renée Dubois",
    "Nuño García",
    "Ana-María López",
    "François Petit",
    "Müller, Jürgen",
    "Siobhán Kelly",
]
EXPORT_LABELS = {"negative": "NEGATIVE", "neutral": "neutral", "positive": "Positive"}
HEADER = ["account_number", "account_name", "timestamp", "feedback_text", "ground_truth"]


def bank_rows(n: int = 100) -> list[dict[str, str]]:
    """``n`` rows, the three classes interleaved; every fifth text spans two lines."""
    pools = [("negative", NEGATIVE), ("neutral", NEUTRAL), ("positive", POSITIVE)]
    rows = []
    for i in range(n):
        label, pool = pools[i % 3]
        text = pool[(i // 3) % len(pool)]
        if i % 5 == 4:
            text = f"{text}\nSent from my phone, ref {1000 + i}"
        elif i // 3 >= len(pool):
            text = f"{text} (again, visit {i // 3 // len(pool) + 1})"
        rows.append(
            {
                "account_number": f"GB{29 + i % 7:02d}LTHE{40_000_000 + 7919 * i:08d}",
                "account_name": NAMES[i % len(NAMES)],
                "timestamp": f"2026-11-{1 + i % 28:02d}T{8 + i % 10:02d}:{(7 * i) % 60:02d}:00Z",
                "feedback_text": text,
                "ground_truth": EXPORT_LABELS[label],
            }
        )
    return rows


def write_bank_csv(path: Path, rows: list[dict[str, str]], *, encoding: str = "utf-8") -> Path:
    """Write ``rows`` as the bank exports them (CRLF line ends, quotes where needed)."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, HEADER, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(out.getvalue().encode(encoding))
    return path
