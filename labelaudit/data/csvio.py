"""Reading the label CSV: strict about structure, literal about values.

Every cell comes back as the exact text in the file (``"NA"``, ``"null"`` and ``""`` stay
strings), so what the user wrote is what the report shows. Structural problems (wrong
delimiter, missing column, ragged rows, bad encoding, broken quoting) are refused with one
line that names the file and says what to do.

Two readers give the same result. pyarrow's CSV reader does the work (it is several times
faster and needs a fraction of the memory for a million rows). Python's ``csv`` module with
``strict=True`` is the reference: it reads every file pyarrow would read differently (pyarrow
is more lenient about quotes, has no field-size limit and does not pad short rows) and
produces every error message. The fast path therefore only ever returns a frame; whenever it
cannot vouch for the result it steps aside.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from labelaudit.errors import LabelAuditError

_UTF8_BOM = b"\xef\xbb\xbf"
_QUOTE = ord('"')
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
        The CSV file. UTF-8 with or without BOM; LF, CRLF or CR line ends; RFC 4180 quoting
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

    Notes
    -----
    The file is read with pyarrow; Python's strict ``csv`` module, the reference for these
    rules, reads the files pyarrow would read differently and words every refusal.
    """
    path = Path(csv_path)
    delimiter = _normalise_delimiter(delimiter)
    raw = _read_bytes(path)
    frame = _read_with_pyarrow(raw, delimiter, path_column, label_column)
    if frame is not None:
        return frame
    return _read_with_python_csv(raw, delimiter, path_column, label_column, path)


def _read_label_csv_with_python(
    csv_path: str | Path,
    *,
    path_column: str = "path",
    label_column: str = "label",
    delimiter: str = ",",
) -> pd.DataFrame:
    """:func:`read_label_csv` through Python's ``csv`` module only: the reference the
    pyarrow path is tested against."""
    path = Path(csv_path)
    delimiter = _normalise_delimiter(delimiter)
    return _read_with_python_csv(_read_bytes(path), delimiter, path_column, label_column, path)


def _read_with_python_csv(
    raw: bytes, delimiter: str, path_column: str, label_column: str, path: Path
) -> pd.DataFrame:
    text = _decode_utf8(raw, path)
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


def _read_bytes(path: Path) -> bytes:
    if not path.exists():
        raise LabelAuditError(f"labels file {path} does not exist")
    if not path.is_file():
        raise LabelAuditError(f"labels file {path} is not a regular file")
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise LabelAuditError(f"cannot read labels file {path}: {error.strerror or error}") from None
    if not raw or raw.isspace():  # as `not raw.strip()`, without copying a large file
        raise LabelAuditError(f"labels file {path} is empty")
    return raw


def _decode_utf8(raw: bytes, path: Path) -> str:
    bom_length = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
    try:
        return raw[bom_length:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = bom_length + error.start
        raise LabelAuditError(
            f"labels file {path} is not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}); "
            "re-save it as UTF-8"
        ) from None


def _read_with_pyarrow(
    raw: bytes, delimiter: str, path_column: str, label_column: str
) -> pd.DataFrame | None:
    """The frame the Python reader would return, or None when that is not certain (then the
    Python reader decides, and words any error)."""
    if not delimiter.isascii() or delimiter == "\0":  # pyarrow takes one ASCII byte, not NUL
        return None
    if not _quotes_only_delimit_fields(raw, delimiter):
        return None
    first_record = _first_record(raw, delimiter)
    if first_record is None:
        return None
    n_fields = len(first_record)
    names = [f"f{i}" for i in range(n_fields)]
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(raw),  # with its BOM: pyarrow drops exactly one, as the Python reader does
            # One thread: faster than pyarrow's pool for a million rows on two cores, and the
            # cores stay free for the decoding that follows.
            read_options=pa_csv.ReadOptions(column_names=names, use_threads=False),
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, quote_char='"', double_quote=True, escape_char=False,
                newlines_in_values=True, ignore_empty_lines=True,
            ),
            convert_options=pa_csv.ConvertOptions(
                # large_string is what pandas' str dtype holds: to_pandas then copies nothing
                column_types={name: pa.large_string() for name in names}, null_values=[],
                strings_can_be_null=False, quoted_strings_can_be_null=False, check_utf8=True,
            ),
        )
    except pa.ArrowException:  # a row of another length (short rows are padded, long ones
        return None  # refused), invalid UTF-8, a record larger than a block, ...
    if table.num_rows == 0:
        return None
    header_cells = [table.column(i)[0].as_py() for i in range(n_fields)]
    if header_cells != first_record or _has_field_over_csv_limit(table, len(raw)):
        return None
    header = [name.strip() for name in header_cells]
    named = [name for name in header if name]
    if len(set(named)) != len(named) or path_column not in named or label_column not in named:
        return None
    data = table.slice(1)
    if data.num_rows == 0:
        return None
    kept = [i for i, name in enumerate(header) if name]
    for i in set(range(n_fields)) - set(kept):
        if pc.max(pc.binary_length(data.column(i))).as_py() > 0:
            return None  # an unnamed column with values: refused
    kept_table = pa.table([data.column(i) for i in kept], names=[header[i] for i in kept])
    return kept_table.to_pandas()


def _quotes_only_delimit_fields(raw: bytes, delimiter: str) -> bool:
    """Whether every quote in the file opens a field, closes one, or is one of a doubled pair
    inside one, and every quoted field is closed.

    Then Python's strict reader and pyarrow split the file alike. Otherwise the Python reader
    must decide: it keeps a quote inside an unquoted field (``ab"c``) as text, and refuses
    text after a closing quote (``"ab"c``) and an unclosed quote, which pyarrow accepts.
    """
    start = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
    if raw.find(b'"', start) < 0:
        return True
    content = np.frombuffer(raw, dtype=np.uint8, offset=start)
    quotes = np.flatnonzero(content == _QUOTE)
    if len(quotes) % 2:
        return False
    # With every quote paired in order, quote 2k opens a field and quote 2k+1 closes it; an
    # "opening" quote right after a closing one is the second of a doubled quote.
    bounds = np.zeros(256, dtype=bool)
    bounds[[ord(delimiter), ord("\r"), ord("\n"), _QUOTE]] = True
    opening, closing = quotes[0::2], quotes[1::2]
    opening_inside = opening[1:] if opening[0] == 0 else opening
    closing_inside = closing[:-1] if closing[-1] == len(content) - 1 else closing
    return bool(bounds[content[opening_inside - 1]].all() and bounds[content[closing_inside + 1]].all())


def _first_record(raw: bytes, delimiter: str) -> list[str] | None:
    """The header as the Python reader reads it (decoding only the start of the file), or None
    if the Python reader would fail there."""
    text = io.TextIOWrapper(io.BytesIO(raw), encoding="utf-8-sig", newline="")
    try:
        for record in csv.reader(text, delimiter=delimiter, strict=True):
            if record:
                return record
    except (csv.Error, UnicodeDecodeError):
        return None
    return None


def _has_field_over_csv_limit(table: pa.Table, n_bytes: int) -> bool:
    """Whether a cell is longer than Python's csv field-size limit (which the Python reader
    refuses and pyarrow does not have)."""
    limit = csv.field_size_limit()
    if n_bytes <= limit:
        return False
    for column in table.columns:
        # A cell has at least as many bytes as characters: count characters only when needed.
        if pc.max(pc.binary_length(column)).as_py() > limit and pc.max(pc.utf8_length(column)).as_py() > limit:
            return True
    return False


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
        if _looks_like_data(header):
            separator = delimiter if delimiter.isprintable() else ","
            first_line = _shown(separator.join(header))
            if len(first_line) > 80:
                first_line = first_line[:77] + "..."
            raise LabelAuditError(
                f"labels file {path} needs a header row (e.g. {path_column}{separator}{label_column}) "
                f"naming its columns; its first line looks like data: {first_line}"
            )
        found = ", ".join(_shown(name) for name in header) if header else "none"
        raise LabelAuditError(
            f"labels file {path} has no column {wanted!r} (columns found: {found}); use {option}"
        )


#: file name endings that mark a header cell as an image path, i.e. the CSV has no header row
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm",
                   ".pgm", ".pbm", ".pnm", ".heic", ".avif", ".ico")


def _looks_like_data(header: list[str]) -> bool:
    """Whether the first record is a data row rather than column names: a cell is an image path."""
    return any(name.lower().endswith(_IMAGE_SUFFIXES) or "/" in name or "\\" in name for name in header)


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
