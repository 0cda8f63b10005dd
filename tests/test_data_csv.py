"""Label CSV reading: literal values, tolerant encodings/line ends, one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from labelaudit.data.csvio import _read_label_csv_with_python, _read_with_pyarrow, read_label_csv
from labelaudit.errors import LabelAuditError


def write_bytes(tmp_path: Path, content: bytes, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def refusal(csv_path: Path, **options) -> str:
    with pytest.raises(LabelAuditError) as caught:
        read_label_csv(csv_path, **options)
    message = str(caught.value)
    assert "\n" not in message
    assert csv_path.name in message
    return message


def test_rows_in_file_order_with_extra_columns_as_text(tmp_path):
    csv_path = write_bytes(tmp_path, b"path,label,annotator,score\nb.png,dog,ann,0.5\na.png,cat,bob,7\n")
    frame = read_label_csv(csv_path)
    assert list(frame.columns) == ["path", "label", "annotator", "score"]
    assert frame.to_dict("records") == [
        {"path": "b.png", "label": "dog", "annotator": "ann", "score": "0.5"},
        {"path": "a.png", "label": "cat", "annotator": "bob", "score": "7"},
    ]
    assert all(type(value) is str for value in frame.to_numpy().ravel())


def test_na_like_values_and_empty_cells_stay_literal_strings(tmp_path):
    csv_path = write_bytes(tmp_path, b"path,label,note\nNA,null,\nNaN,None,N/A\n")
    frame = read_label_csv(csv_path)
    assert frame["path"].tolist() == ["NA", "NaN"]
    assert frame["label"].tolist() == ["null", "None"]
    assert frame["note"].tolist() == ["", "N/A"]
    assert frame.isna().sum().sum() == 0


def test_utf8_bom_and_crlf(tmp_path):
    csv_path = write_bytes(tmp_path, b"\xef\xbb\xbfpath,label\r\na.png,cat\r\nb.png,dog\r\n")
    frame = read_label_csv(csv_path)
    assert list(frame.columns) == ["path", "label"]
    assert frame["label"].tolist() == ["cat", "dog"]


def test_quoted_fields_with_commas_quotes_and_newlines(tmp_path):
    content = b'path,label,note\n"dir, with comma/a.png",cat,"line one\nline two"\nb.png,"say ""dog""",x\n'
    frame = read_label_csv(write_bytes(tmp_path, content))
    assert frame["path"].tolist() == ["dir, with comma/a.png", "b.png"]
    assert frame["label"].tolist() == ["cat", 'say "dog"']
    assert frame["note"].tolist() == ["line one\nline two", "x"]


def test_non_ascii_paths_and_labels(tmp_path):
    content = "path,label\nkatzen/müde é.png,Katze ß\n猫/1.png,猫\n".encode()
    frame = read_label_csv(write_bytes(tmp_path, content))
    assert frame["path"].tolist() == ["katzen/müde é.png", "猫/1.png"]
    assert frame["label"].tolist() == ["Katze ß", "猫"]


def test_blank_lines_skipped_short_rows_padded_header_names_stripped(tmp_path):
    content = b"path , label,note\n\na.png,cat\n\nb.png,dog,x\n\n"
    frame = read_label_csv(write_bytes(tmp_path, content))
    assert list(frame.columns) == ["path", "label", "note"]
    assert frame["note"].tolist() == ["", "x"]
    assert len(frame) == 2


def test_trailing_delimiter_columns_are_dropped(tmp_path):
    frame = read_label_csv(write_bytes(tmp_path, b"path,label,,\na.png,cat,,\nb.png,dog,,\n"))
    assert list(frame.columns) == ["path", "label"]


def test_unnamed_column_with_values_is_refused(tmp_path):
    message = refusal(write_bytes(tmp_path, b"path,label,\na.png,cat,oops\n"))
    assert "column 3 has values but no name" in message


def test_custom_columns_and_delimiter(tmp_path):
    content = b"file;klasse\na.png;cat\n"
    frame = read_label_csv(
        write_bytes(tmp_path, content), path_column="file", label_column="klasse", delimiter=";"
    )
    assert frame["file"].tolist() == ["a.png"]
    assert frame["klasse"].tolist() == ["cat"]


@pytest.mark.parametrize("spelling", ["\t", "\\t", "tab"])
def test_tab_delimiter_spellings(tmp_path, spelling):
    frame = read_label_csv(write_bytes(tmp_path, b"path\tlabel\na, b.png\tcat\n"), delimiter=spelling)
    assert frame["path"].tolist() == ["a, b.png"]


@pytest.mark.parametrize("delimiter", ["\0", "§"])  # not one pyarrow can split on: read by Python's csv
def test_delimiters_pyarrow_does_not_take(tmp_path, delimiter):
    content = f'path{delimiter}label\n"a{delimiter}b.png"{delimiter}cat\n'.encode()
    frame = read_label_csv(write_bytes(tmp_path, content), delimiter=delimiter)
    assert frame.to_dict("records") == [{"path": f"a{delimiter}b.png", "label": "cat"}]


def test_missing_file(tmp_path):
    message = refusal(tmp_path / "nope.csv")
    assert "does not exist" in message


def test_directory_instead_of_file(tmp_path):
    (tmp_path / "dir.csv").mkdir()
    assert "not a regular file" in refusal(tmp_path / "dir.csv")


@pytest.mark.parametrize("content", [b"", b"\n\r\n  \n"])
def test_empty_file(tmp_path, content):
    assert "is empty" in refusal(write_bytes(tmp_path, content))


def test_header_only(tmp_path):
    assert "has no data rows" in refusal(write_bytes(tmp_path, b"path,label\n\n"))


def test_missing_label_column_names_the_columns_found(tmp_path):
    message = refusal(write_bytes(tmp_path, b"path,class,source\na.png,cat,x\n"))
    assert message.endswith(
        "has no column 'label' (columns found: path, class, source); use --label-column"
    )


def test_missing_path_column_points_at_path_option(tmp_path):
    message = refusal(write_bytes(tmp_path, b"file,label\na.png,cat\n"))
    assert "has no column 'path' (columns found: file, label); use --path-column" in message


@pytest.mark.parametrize(
    ("delimiter", "shown", "flag"),
    [(";", "';'", "';'"), ("\t", "tab", "'\\t'"), ("|", "'|'", "'|'")],
)
def test_other_delimiter_is_suggested(tmp_path, delimiter, shown, flag):
    content = f"path{delimiter}label\na,1.png{delimiter}cat\n".encode()
    message = refusal(write_bytes(tmp_path, content))
    assert message.endswith(f"looks {shown}-delimited; pass --delimiter {flag}")


def test_latin1_file_is_refused_with_byte_and_offset(tmp_path):
    content = "path,label\ncaf\xe9.png,cat\n".encode("latin-1")
    message = refusal(write_bytes(tmp_path, content))
    offset = content.index(b"\xe9")
    assert f"is not UTF-8 text (byte 0xe9 at offset {offset})" in message


def test_non_utf8_offset_counts_the_bom(tmp_path):
    content = b"\xef\xbb\xbfpath,label\n\xff.png,cat\n"
    offset = content.index(b"\xff.png")
    message = refusal(write_bytes(tmp_path, content))
    assert f"byte 0xff at offset {offset}" in message


def test_row_with_more_fields_than_header_names_the_line(tmp_path):
    content = b"path,label\na.png,cat\n\nb,1.png,dog\n"
    message = refusal(write_bytes(tmp_path, content))
    assert "line 4 has 3 fields but the header has 2" in message


def test_duplicate_column_names(tmp_path):
    message = refusal(write_bytes(tmp_path, b"path,label,label\na.png,cat,dog\n"))
    assert "two columns named 'label'" in message


def test_unterminated_quote_is_refused_not_swallowed(tmp_path):
    content = b'path,label\na.png,cat\n"b.png,dog\nc.png,cat\n'
    message = refusal(write_bytes(tmp_path, content))
    assert "malformed CSV in the record starting on line 3" in message


def test_bad_delimiter_option(tmp_path):
    with pytest.raises(LabelAuditError, match="one character"):
        read_label_csv(write_bytes(tmp_path, b"path,label\na,b\n"), delimiter=";;")


def test_cr_line_ends_and_blank_lines(tmp_path):
    frame = read_label_csv(write_bytes(tmp_path, b'path,label\r\ra.png,"c\rt"\r\r\rb.png,dog'))
    assert frame.to_dict("records") == [{"path": "a.png", "label": "c\rt"}, {"path": "b.png", "label": "dog"}]


def test_whitespace_only_line_is_a_row_not_a_blank_line(tmp_path):
    frame = read_label_csv(write_bytes(tmp_path, b"path,label\na.png,cat\n \n"))
    assert frame.to_dict("records") == [{"path": "a.png", "label": "cat"}, {"path": " ", "label": ""}]


def test_quote_inside_an_unquoted_field_is_text(tmp_path):
    frame = read_label_csv(write_bytes(tmp_path, b'path,label\n12" screen.png,cat\n "b.png",dog\n'))
    assert frame["path"].tolist() == ['12" screen.png', ' "b.png"']


# Files pyarrow would read without complaint but Python's strict csv refuses: still refused.
@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'path,label\na.png,cat\n"b.png"x,dog\n', "line 3 (',' expected after '\"')"),
        (b'path,label\n"a.png" ,cat\n', "line 2 (',' expected after '\"')"),
        (b'path,label\n"a.png"b"c",cat\n', "line 2 (',' expected after '\"')"),
        # the text quote in x"y shifts the pairing: the bad closing quote looks like an opening one
        (b'path,label,x\nx"y,",abc,"def,z"\n', "line 2 (',' expected after '\"')"),
        (b'path,label\na.png,"cat', "line 2 (unexpected end of data)"),
        (b'path,label\na.png,"cat\nb.png,dog\n', "line 2 (unexpected end of data)"),
        (b"path,label\na.png," + b"x" * 131073 + b"\n", "line 2 (field larger than field limit (131072))"),
    ],
)
def test_strict_quoting_and_field_limit_are_kept(tmp_path, content, reason):
    message = refusal(write_bytes(tmp_path, content))
    assert message.endswith(f"malformed CSV in the record starting on {reason}; check its quotes")


def test_cell_at_the_field_limit_is_read(tmp_path):
    frame = read_label_csv(write_bytes(tmp_path, "path,label\na.png,".encode() + "é".encode() * 131072))
    assert len(frame["label"].iloc[0]) == 131072


@pytest.mark.parametrize(
    "content",
    [
        b"path,label,source\na.png,cat,x\nb.png,dog,y\n",
        b'\xef\xbb\xbf"path","label"\r\n"a, ""1"".png","cat"\r\n\r\n"b\r\n.png",""\r\n',
        b"path,label,,\r\ra.png,cat,,\rb.png,dog,,\r",
        'path,label\n猫.png,NA\n"x\ny",\n'.encode(),
    ],
)
def test_ordinary_files_take_the_pyarrow_path_with_the_reference_result(tmp_path, content):
    csv_path = write_bytes(tmp_path, content)
    fast = _read_with_pyarrow(content, ",", "path", "label")
    assert fast is not None
    pd.testing.assert_frame_equal(fast, _read_label_csv_with_python(csv_path), check_exact=True)


@pytest.mark.parametrize(
    "content",
    [
        b'path,label\n"a"b,cat\n',  # text after a closing quote (refused)
        b'path,label\na"b,cat\n',  # a quote inside an unquoted field (text)
        b'path,label,x\nx"y,",abc,"def,z"\n',  # text quote, then text after a closing quote (refused)
        b'path,label\na,"b\n',  # unclosed quote (refused)
        b"path,label\na\n",  # short row (padded)
        b"path,label\na,b\n \n",  # whitespace-only line (a row)
        b"path,label\na,b,c\n",  # long row (refused)
        b"path,label\n\xff,b\n",  # not UTF-8 (refused)
        b"path,path\na,b\n",  # duplicate column (refused)
        b"path,label\n",  # no data rows (refused)
    ],
)
def test_files_pyarrow_would_read_differently_go_to_the_python_reader(content):
    assert _read_with_pyarrow(content, ",", "path", "label") is None
