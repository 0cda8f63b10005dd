"""Reading the label CSV: strict about structure, literal about values.

Every cell comes back as the exact text in the file (``"NA"``, ``"null"`` and ``""`` stay
strings), so what the user wrote is what the report shows. Structural problems (wrong
delimiter, missing column, ragged rows, bad encoding, broken quoting) are refused with one
line that names the file and says what to do.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from labelaudit.errors import LabelAuditError

_UTF8_BOM = b"\xef\xbb\xbf"
_OTHER_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_ALIASES = {"\\t": "\t", "tab": "\t", "TAB": "\t"}


def read_label_csv(
    csv_path: str | Path,
    *,
    path_column: str = "path",
    label_column: str = "label",
    delimiter: str = ",",
) -> pd.DataFrame:
    """Read a label CSV with a header row into a frame of strings.

    Parameters
    ----------
    csv_path
        The CSV file. UTF-8 with or without BOM; LF or CRLF line ends; RFC 4180 quoting
        (quoted fields may hold delimiters and newlines).
    path_column, label_column
        Header names that must be present.
    delimiter
        One character. ``"\\t"`` (backslash-t, as typed in a shell) and ``"tab"`` mean a tab.

    Returns
    -------
    pandas.DataFrame
        One row per data row, in file order; one column per header field, named as in the
        header with surrounding whitespace removed. Every value is a ``str`` (empty cell ->
        ``""``); no NA conversion. Rows shorter than the header are padded with ``""``.
        Blank lines are skipped. Unnamed columns that are empty in every row (a trailing
        delimiter on each line, as spreadsheet exports often write) are dropped.

    Raises
    ------
    LabelAuditError
        File missing or not a file, empty, not UTF-8, broken quoting, no header, duplicate
        or missing column names, a row with more fields than the header, no data rows, or a
        header that looks delimited by another character.
    """
    path = Path(csv_path)
    delimiter = _normalise_delimiter(delimiter)
    text = _read_utf8_text(path)
    records = _parse_records(text, delimiter, path)
    if not records:
        raise LabelAuditError(f"labels file {path} has no header row")

    header_line, raw_header = records[0]
    header = [name.strip() for name in raw_header]
    data = records[1:]
    _check_header(header, text, delimiter, path_column, label_column, path)
    _check_no_long_rows(data, len(header), path)
    table = [row + [""] * (len(header) - len(row)) for _, row in data]
    header, table = _drop_empty_unnamed_columns(header, table, path)
    if not table:
        raise LabelAuditError(f"labels file {path} has no data rows, only a header")
    # One list of str per column: pandas stores text without converting "NA" & co.
    columns = {name: [row[i] for row in table] for i, name in enumerate(header)}
    return pd.DataFrame(columns, columns=header, dtype=str)


def _normalise_delimiter(delimiter: str) -> str:
    delimiter = _DELIMITER_ALIASES.get(delimiter, delimiter)
    if len(delimiter) != 1 or delimiter in ('"', "\n", "\r"):
        raise LabelAuditError(
            f"delimiter must be one character other than a quote or newline, got {delimiter!r}"
        )
    return delimiter


def _read_utf8_text(path: Path) -> str:
    if not path.exists():
        raise LabelAuditError(f"labels file {path} does not exist")
    if not path.is_file():
        raise LabelAuditError(f"labels file {path} is not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise LabelAuditError(f"cannot read labels file {path}: {error.strerror or error}") from None
    if not raw.strip():
        raise LabelAuditError(f"labels file {path} is empty")
    bom_length = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
    try:
        return raw[bom_length:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = bom_length + error.start
        raise LabelAuditError(
            f"labels file {path} is not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}); "
            "re-save it as UTF-8"
        ) from None


def _parse_records(text: str, delimiter: str, path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records as (line number where the record starts, fields)."""
    # strict=True: an unterminated quote would otherwise swallow the rest of the file silently.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    while True:
        start_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return records
        except csv.Error as error:
            raise LabelAuditError(
                f"labels file {path}: malformed CSV in the record starting on line {start_line} "
                f"({error}); check its quotes"
            ) from None
        if row:
            records.append((start_line, row))


def _check_no_long_rows(data: list[tuple[int, list[str]]], n_header: int, path: Path) -> None:
    for line, row in data:
        if len(row) > n_header:
            raise LabelAuditError(
                f"labels file {path}: line {line} has {len(row)} fields but the header has "
                f"{n_header}; quote values that contain the delimiter"
            )


def _drop_empty_unnamed_columns(
    header: list[str], table: list[list[str]], path: Path
) -> tuple[list[str], list[list[str]]]:
    keep = []
    for i, name in enumerate(header):
        if name:
            keep.append(i)
        elif any(row[i] for row in table):
            raise LabelAuditError(
                f"labels file {path}: column {i + 1} has values but no name in the header"
            )
    if len(keep) == len(header):
        return header, table
    return [header[i] for i in keep], [[row[i] for i in keep] for row in table]


def _check_header(
    header: list[str],
    text: str,
    delimiter: str,
    path_column: str,
    label_column: str,
    path: Path,
) -> None:
    seen: set[str] = set()
    for name in header:
        if not name:
            continue
        if name in seen:
            raise LabelAuditError(f"labels file {path} has two columns named {name!r}")
        seen.add(name)
    for wanted, option in ((path_column, "--path-column"), (label_column, "--label-column")):
        if wanted in seen:
            continue
        suggested = _suggest_delimiter(text, delimiter, path_column, label_column)
        if suggested is not None:
            shown = "tab" if suggested == "\t" else repr(suggested)
            flag = "'\\t'" if suggested == "\t" else repr(suggested)
            raise LabelAuditError(
                f"labels file {path} looks {shown}-delimited; pass --delimiter {flag}"
            )
        found = ", ".join(_shown(name) for name in header) if header else "none"
        raise LabelAuditError(
            f"labels file {path} has no column {wanted!r} (columns found: {found}); use {option}"
        )


def _shown(name: str) -> str:
    """A header name for a one-line message: as written, or quoted with escapes when it holds
    line breaks or other unprintable characters (a quoted header cell may)."""
    return name if name.isprintable() else repr(name)


def _suggest_delimiter(
    text: str, delimiter: str, path_column: str, label_column: str
) -> str | None:
    """Another delimiter that makes the header work, if the header line clearly uses one."""
    first_line = text.lstrip("\r\n").splitlines()[0] if text.strip() else ""
    best: str | None = None
    for candidate in _OTHER_DELIMITERS:
        if candidate == delimiter or candidate not in first_line:
            continue
        fields = [name.strip() for name in next(csv.reader([first_line], delimiter=candidate))]
        if path_column in fields and label_column in fields:
            return candidate
        if best is None and delimiter not in first_line:
            best = candidate
    return best
