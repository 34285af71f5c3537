"""Streaming any CSV export: named columns, any ASCII-based encoding, errors that name the line.

Both sides read customer files: a node ingests its records (``node.csv_input``), and an
organisation sends a feedback file to the coordinator (``lethe feedback``). Rows are
decoded line by line, so memory does not grow with the file and a byte sequence that does
not decode is reported with its line number; the header is matched case-insensitively.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import LetheError

DEFAULT_ENCODING = "utf-8-sig"
csv.field_size_limit(1 << 24)  # one text of up to 16 MiB; csv's default (128 KiB) is too small


class CsvFileError(LetheError):
    """The file as a whole cannot be read: missing, undecodable line, no header, no column."""


def check_encoding(name: str) -> str:
    """The codec's canonical name, if rows can be split on ``\\n`` bytes in it."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        raise CsvFileError(f"unknown encoding {name!r} (try utf-8, latin-1, cp1252)") from None
    if "\n".encode(info.name).removeprefix(codecs.BOM_UTF8) != b"\n":
        raise CsvFileError(
            f"encoding {name!r} is not ASCII-based (UTF-16/32 files): convert the file to UTF-8"
        )
    return info.name


def cli_encoding(name: str) -> str:
    """A user's ``--encoding``: plain UTF-8 also skips a byte-order mark."""
    return DEFAULT_ENCODING if name.lower().replace("_", "-") in ("utf-8", "utf8") else name


@dataclass(frozen=True)
class CsvColumns:
    """A CSV file and the columns it must have, by role (``{"id": "account_number"}``)."""

    path: Path
    columns: Mapping[str, str]
    encoding: str = DEFAULT_ENCODING

    def __post_init__(self) -> None:
        check_encoding(self.encoding)

    def _lines(self) -> Iterator[str]:
        encoding = self.encoding
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - the with below closes it
        except OSError as exc:
            raise CsvFileError(f"cannot read {self.path}: {exc.strerror}") from exc
        with handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and encoding == "utf-8-sig":
                    raw = raw.removeprefix(codecs.BOM_UTF8)
                    encoding = "utf-8"
                try:
                    yield raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    name = "UTF-8" if encoding.startswith("utf-8") else encoding
                    raise CsvFileError(
                        f"line {number}: not valid {name} ({exc.reason}); give the file's "
                        "encoding with --encoding (e.g. latin-1, cp1252)"
                    ) from exc

    def rows(self) -> Iterator[tuple[int, dict[str, str] | None, str | None]]:
        """(first line, cells by role, problem) of every non-blank data row.

        A row with the wrong number of fields has no cells and a problem; a broken quote
        ends the file with a problem. File-level faults raise :class:`CsvFileError`.
        """
        reader = csv.reader(self._lines(), strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise CsvFileError("line 1: empty file, expected a header") from None
        except csv.Error as exc:
            raise CsvFileError(f"line 1: {exc}") from exc
        names = [h.strip().casefold() for h in header]
        missing = [
            f"{role} column {col!r}"
            for role, col in self.columns.items()
            if col.strip().casefold() not in names
        ]
        if missing:
            flags = ", ".join(f"--{role}-col" for role in self.columns)
            raise CsvFileError(
                f"line 1: header {header} lacks the {', '.join(missing)}; "
                f"name the columns with {flags}"
            )
        at = {role: names.index(col.strip().casefold()) for role, col in self.columns.items()}
        line = reader.line_num + 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield line, None, f"line {line}: {exc}"
                return
            if row and any(cell.strip() for cell in row):
                if len(row) != len(header):
                    yield line, None, f"line {line}: expected {len(header)} fields, got {len(row)}"
                else:
                    yield line, {role: row[i] for role, i in at.items()}, None
            line = reader.line_num + 1
