"""``labelaudit report`` and ``labelaudit export`` on a real scan: terminal view, self-contained HTML,
contact sheet, relabel CSV, exit codes."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from labelaudit.cli.app import app
from labelaudit.data.images import load_image_rgb
from labelaudit.report.contact_sheet import SHEET_CELLS, render_contact_sheet, sheet_layout
from labelaudit.report.parquet import write_parquet
from labelaudit.report.schema import SAMPLES_SCHEMA
from labelaudit.report.views import Thumbnails

runner = CliRunner()
THUMBNAIL_SIZE = 96
VOID_TAGS = {"meta", "img", "br", "hr", "input", "link", "col", "wbr", "source"}


# --------------------------------------------------------------------------- helpers

@pytest.fixture
def run_dir(scanned_run, tmp_path) -> Path:
    """A private copy of the session's scan (report writes into the run directory)."""
    copy = tmp_path / "run"
    shutil.copytree(scanned_run, copy, ignore=shutil.ignore_patterns("model"))
    return copy


def expected_suspects(run: Path, top: int, given_label: str | None = None) -> pd.DataFrame:
    samples = pd.read_parquet(run / "samples.parquet")
    issues = samples[samples["is_issue"] == True]  # noqa: E712 (nullable column)
    if given_label is not None:
        issues = issues[issues["given_label"] == given_label]
    return issues.sort_values("rank").head(top)


def ranked_rows(run: Path, top: int, given_label: str | None = None) -> pd.DataFrame:
    """What ``--top`` selects: the ``top`` audited rows of lowest rank, flagged or not."""
    samples = pd.read_parquet(run / "samples.parquet")
    audited = samples[samples["rank"].notna()]
    if given_label is not None:
        audited = audited[audited["given_label"] == given_label]
    return audited.sort_values("rank").head(top)


def images_root(run: Path) -> Path:
    return Path(json.loads((run / "run.json").read_text())["images_root"])


class ReportPage(HTMLParser):
    """Collects what the tests check: URLs in attributes, tag balance, ids and the suspect cards."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []
        self.ids: list[str] = []
        self.cards: list[dict] = []
        self.heatmap_cells = 0
        self.script_sources: list[str] = []
        self.unbalanced: list[str] = []
        self._open: list[str] = []
        self._card: dict | None = None
        self._span: str | None = None
        self._in_script = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        for name in ("src", "href", "action", "srcset", "poster", "formaction"):
            if name in attributes:
                self.urls.append((tag, name, attributes[name]))
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag not in VOID_TAGS:
            self._open.append(tag)
        if tag == "script":
            self._in_script = True
            self.script_sources.append("")
        if tag == "td" and "cell" in classes:
            self.heatmap_cells += 1
        if tag == "figure" and "card" in classes:
            self._card = {"given": attributes["data-given"], "suggested": attributes["data-suggested"],
                          "rank": int(attributes["data-rank"]), "img": None, "placeholder": False, "text": {}}
            self.cards.append(self._card)
        elif self._card is not None:
            if tag == "img":
                self._card["img"] = attributes["src"]
            if "missing" in classes:
                self._card["placeholder"] = True
            if tag == "span" and classes:
                self._span = classes[0]

    def handle_endtag(self, tag):
        if not self._open or self._open[-1] != tag:
            self.unbalanced.append(tag)
        else:
            self._open.pop()
        if tag == "figure":
            self._card = None
        if tag == "span":
            self._span = None
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._card is not None and self._span:
            self._card["text"][self._span] = self._card["text"].get(self._span, "") + data
        if self._in_script:
            self.script_sources[-1] += data


def decode_data_uri(uri: str) -> np.ndarray:
    header, payload = uri.split(",", 1)
    assert header == "data:image/jpeg;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


def rewrite_samples(run: Path, change) -> pd.DataFrame:
    samples = pd.read_parquet(run / "samples.parquet")
    samples = change(samples)
    write_parquet(samples, run / "samples.parquet", schema=SAMPLES_SCHEMA)
    return samples


# --------------------------------------------------------------------------- report: terminal and files

def test_report_prints_summary_classes_and_suspects(run_dir):
    result = runner.invoke(app, ["report", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    summary = json.loads((run_dir / "summary.json").read_text())
    classes = pd.read_parquet(run_dir / "classes.parquet")
    suspects = expected_suspects(run_dir, 20)
    assert f"Audited {summary['audited']} of {summary['rows']} rows" in result.output
    assert f"{summary['n_issues']} rows flagged" in result.output
    assert "Per class" in result.output
    for row in classes.itertuples():
        assert f"{row.estimated_noise_rate:.1%}" in result.output
    assert "Most suspicious labels" in result.output
    assert suspects["path"].iloc[0] in result.output
    assert (run_dir / "report.html").is_file() and (run_dir / "suspects.png").is_file()
    assert "Wrote " in result.output and "report.html" in result.output


def test_html_parses_and_is_self_contained(run_dir):
    assert runner.invoke(app, ["report", "-o", str(run_dir), "--quiet"]).exit_code == 0
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    page = ReportPage(text)
    assert text.startswith("<!DOCTYPE html>")
    assert page.unbalanced == [] and page._open == []
    assert len(page.ids) == len(set(page.ids))
    assert {"summary", "classes", "transition", "heatmap", "suspects", "suspect-grid", "class-filter"} <= set(page.ids)
    assert "http://" not in text and "https://" not in text
    assert "url(" not in text and "@import" not in text
    for tag, name, value in page.urls:
        assert value.startswith("data:") or value.startswith("#"), (tag, name, value[:60])
    assert all(source.strip() for source in page.script_sources)  # inline scripts only, no src=
    n_classes = len(pd.read_parquet(run_dir / "classes.parquet"))
    assert page.heatmap_cells == n_classes * n_classes


def test_html_embeds_one_thumbnail_per_suspect_with_its_labels(run_dir):
    top = 12
    assert runner.invoke(app, ["report", "-o", str(run_dir), "--top", str(top), "--quiet"]).exit_code == 0
    page = ReportPage((run_dir / "report.html").read_text(encoding="utf-8"))
    suspects = ranked_rows(run_dir, top)
    assert len(suspects) == top
    assert len(page.cards) == len(suspects)
    root = images_root(run_dir)
    for card, row in zip(page.cards, suspects.itertuples()):
        assert (card["rank"], card["given"], card["suggested"]) == (row.rank, row.given_label, row.suggested_label)
        assert card["text"]["given"] == row.given_label and card["text"]["suggested"] == row.suggested_label
        assert card["text"]["prob"] == f"{row.error_probability:.2f}"
        thumbnail = decode_data_uri(card["img"])
        assert thumbnail.shape == (THUMBNAIL_SIZE, THUMBNAIL_SIZE, 3)
        original = load_image_rgb(root / row.path, THUMBNAIL_SIZE).astype(float)
        assert np.abs(thumbnail - original).mean() < 8  # the right image (JPEG-compressed)


def test_top_and_class_limit_the_suspects(run_dir):
    everything = expected_suspects(run_dir, 10_000)
    label = everything["given_label"].value_counts().index[0]
    result = runner.invoke(app, ["report", "-o", str(run_dir), "--class", label, "--top", "1000"])
    assert result.exit_code == 0, result.output
    cards = ReportPage((run_dir / f"report-{label}.html").read_text(encoding="utf-8")).cards
    chosen = ranked_rows(run_dir, 1000, label)
    assert [card["rank"] for card in cards] == chosen["rank"].tolist()
    assert {card["given"] for card in cards} == {label}
    n_flagged = int((chosen["is_issue"] == True).sum())  # noqa: E712
    assert (f"Most suspicious labels given '{label}': top {len(chosen)} rows by rank, {n_flagged} of them flagged"
            in result.output)
    assert not (run_dir / "report.html").exists() and not (run_dir / "suspects.png").exists()
    assert (run_dir / f"suspects-{label}.png").is_file()


def test_missing_image_gets_a_placeholder(run_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(images_root(run_dir), images)
    record = json.loads((run_dir / "run.json").read_text())
    record["images_root"] = str(images)
    (run_dir / "run.json").write_text(json.dumps(record))
    suspects = ranked_rows(run_dir, 5)
    (images / suspects["path"].iloc[0]).unlink()

    result = runner.invoke(app, ["report", "-o", str(run_dir), "--top", "5"])
    assert result.exit_code == 0, result.output
    assert "1 suspect image(s) not found" in result.output
    cards = ReportPage((run_dir / "report.html").read_text(encoding="utf-8")).cards
    assert [card["placeholder"] for card in cards] == [True] + [False] * (len(cards) - 1)
    assert cards[0]["img"] is None and all(card["img"] for card in cards[1:])


def test_skipped_rows_are_summarised(run_dir):
    samples = pd.read_parquet(run_dir / "samples.parquet")
    clean = samples.index[samples["is_issue"] == False][:2]  # noqa: E712

    def skip_two(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype(object)
        frame.loc[clean, ["suggested_label", "p_given", "label_quality", "error_probability", "is_issue", "rank",
                          "fold"]] = None
        frame.loc[clean, "status"] = ["missing_file", "outside_root"]
        return frame

    rewrite_samples(run_dir, skip_two)
    result = runner.invoke(app, ["report", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "skipped 2: 1 missing_file, 1 outside_root" in result.output
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert 'id="skipped"' in text
    for index in clean:
        assert samples.loc[index, "path"] in text


def test_no_flagged_rows(run_dir):
    rewrite_samples(run_dir, lambda frame: frame.assign(is_issue=False))
    result = runner.invoke(app, ["report", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "No rows are flagged as likely label errors." in result.output
    page = ReportPage((run_dir / "report.html").read_text(encoding="utf-8"))
    assert page.cards == [] and "suspect-grid" not in page.ids
    assert Image.open(run_dir / "suspects.png").size == (sheet_layout(4, THUMBNAIL_SIZE).width,
                                                          sheet_layout(4, THUMBNAIL_SIZE).height)


def test_html_option_and_no_html(run_dir, tmp_path):
    target = tmp_path / "elsewhere" / "page.html"
    assert runner.invoke(app, ["report", "-o", str(run_dir), "--html", str(target), "-q"]).exit_code == 0
    assert target.is_file() and (target.parent / "page-suspects.png").is_file()
    assert not (run_dir / "report.html").exists() and not (run_dir / "suspects.png").exists()

    assert runner.invoke(app, ["report", "-o", str(run_dir), "--no-html", "-q"]).exit_code == 0
    assert not (run_dir / "report.html").exists() and (run_dir / "suspects.png").is_file()


def test_report_exit_2_cases(run_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", "-o", str(empty)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: no scan in {empty}: run `labelaudit scan IMAGES LABELS.csv "
                                     f"-o {empty}` first")

    result = runner.invoke(app, ["report", "-o", str(run_dir), "--class", "unicorn"])
    classes = json.loads((run_dir / "run.json").read_text())["classes"]
    assert result.exit_code == 2
    assert result.output.strip() == f"Error: unknown class 'unicorn'; classes: {', '.join(classes)}"

    result = runner.invoke(app, ["report", "-o", str(run_dir), "--top", "0"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --top must be at least 1, got 0"

    result = runner.invoke(app, ["report", "-o", str(run_dir), "--html", "x.html", "--no-html"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --html and --no-html contradict each other; pass one"


# --------------------------------------------------------------------------- contact sheet

def test_contact_sheet_file_matches_layout(run_dir):
    assert runner.invoke(app, ["report", "-o", str(run_dir), "--top", "1000", "-q"]).exit_code == 0
    n_cells = min(len(ranked_rows(run_dir, 1000)), SHEET_CELLS)
    layout = sheet_layout(n_cells, THUMBNAIL_SIZE)
    sheet = Image.open(run_dir / "suspects.png")
    assert sheet.format == "PNG" and sheet.size == (layout.width, layout.height)
    assert layout.rows * layout.columns >= n_cells > (layout.rows - 1) * layout.columns


def _fake_suspects(n: int) -> tuple[pd.DataFrame, Thumbnails]:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"path": [f"dir/img_{i}.png" for i in range(n)], "given_label": ["cat"] * n,
                          "suggested_label": ["dog"] * n, "error_probability": np.linspace(0.9, 0.5, n),
                          "rank": np.arange(1, n + 1)})
    images = rng.integers(0, 256, size=(n, 40, 40, 3), dtype=np.uint8)
    return frame, Thumbnails(images, np.ones(n, bool))


def test_contact_sheet_places_each_thumbnail_in_its_cell():
    frame, thumbnails = _fake_suspects(11)
    thumbnails.found[3] = False
    sheet = np.asarray(render_contact_sheet(frame, thumbnails, title="t"))
    layout = sheet_layout(11, 40)
    assert sheet.shape == (layout.height, layout.width, 3)
    for index in range(11):
        left, top, right, bottom = layout.thumbnail_box(index)
        region = sheet[top:bottom, left:right]
        if index == 3:
            assert not np.array_equal(region, thumbnails.images[3])
        else:
            assert np.array_equal(region, thumbnails.images[index])


def test_contact_sheet_grows_by_rows_of_columns():
    one_row = render_contact_sheet(*_fake_suspects(3))
    full_row = render_contact_sheet(*_fake_suspects(8))
    two_rows = render_contact_sheet(*_fake_suspects(9))
    assert one_row.height == full_row.height and one_row.width < full_row.width
    assert two_rows.width == full_row.width and two_rows.height > full_row.height
    assert two_rows.height - full_row.height == sheet_layout(9, 40).cell_height


# --------------------------------------------------------------------------- export

def test_export_relabel_csv_default_is_the_flagged_rows(run_dir):
    result = runner.invoke(app, ["export", "--format", "relabel-csv", "-o", str(run_dir)])
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(run_dir / "relabel.csv", keep_default_na=False)
    samples = pd.read_parquet(run_dir / "samples.parquet")
    wanted = samples[samples["is_issue"] == True].sort_values("rank")  # noqa: E712 (nullable column)
    assert list(exported.columns) == ["path", "given_label", "suggested_label", "error_probability", "is_issue"]
    assert exported["is_issue"].tolist() == [True] * len(wanted)
    assert exported["path"].tolist() == wanted["path"].tolist()
    assert exported["given_label"].tolist() == wanted["given_label"].tolist()
    assert exported["suggested_label"].tolist() == wanted["suggested_label"].tolist()
    assert np.allclose(exported["error_probability"], wanted["error_probability"], atol=5e-5)
    assert f"Wrote {len(wanted)} rows to {run_dir / 'relabel.csv'}: the {len(wanted)} flagged rows" in result.output


def test_export_threshold_and_stdout(run_dir):
    samples = pd.read_parquet(run_dir / "samples.parquet")
    audited = samples[samples["rank"].notna()]  # flagged or not
    threshold = float(np.median(audited["error_probability"]))
    result = runner.invoke(app, ["export", "-o", str(run_dir), "--min-error-probability", str(threshold),
                                 "--output", "-"])
    assert result.exit_code == 0, result.output
    exported = pd.read_csv(io.StringIO(result.stdout))
    assert len(exported) == int((audited["error_probability"] >= threshold).sum())
    assert (exported["error_probability"] >= threshold - 5e-5).all()
    assert not (run_dir / "relabel.csv").exists()

    result = runner.invoke(app, ["export", "-o", str(run_dir), "--min-error-probability", "0",
                                 "--output", str(run_dir / "all.csv")])
    assert len(pd.read_csv(run_dir / "all.csv")) == len(audited)


def test_export_exit_2_cases(run_dir, tmp_path):
    result = runner.invoke(app, ["export", "--format", "xml", "-o", str(run_dir)])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: unknown format 'xml'; formats: relabel-csv, data-issues-csv"

    result = runner.invoke(app, ["export", "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: no scan in {tmp_path}: run `labelaudit scan IMAGES LABELS.csv "
                                     f"-o {tmp_path}` first")

    result = runner.invoke(app, ["export", "-o", str(run_dir), "--min-error-probability", "1.5"])
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --min-error-probability must be between 0 and 1, got 1.5"


# --------------------------------------------------------------------------- HTML rendering without a scan

def synthetic_view(classes: list[str], n_suspects: int, *, path_prefix: str = "img") -> tuple:
    """A RunView with a random T over ``classes`` and ``n_suspects`` flagged rows whose images do not exist."""
    from labelaudit.report.rundir import RunRecord
    from labelaudit.report.views import RunView

    rng = np.random.default_rng(1)
    k = len(classes)
    transition = 0.8 * np.eye(k) + 0.2 * rng.dirichlet(np.ones(k), size=k)
    true_index, noisy_index = np.divmod(np.arange(k * k), k)
    transition_frame = pd.DataFrame({
        "true_label": np.asarray(classes, object)[true_index], "noisy_label": np.asarray(classes, object)[noisy_index],
        "probability": transition.ravel(), "ci_low": transition.ravel() * 0.9, "ci_high": transition.ravel(),
        "count": np.ones(k * k), "estimator": "confident_joint"})
    given = rng.integers(0, k, n_suspects)
    samples = pd.DataFrame({
        "path": [f"{path_prefix}_{i}.png" for i in range(n_suspects)],
        "given_label": np.asarray(classes, object)[given],
        "suggested_label": np.asarray(classes, object)[(given + 1) % k],
        "error_probability": np.linspace(0.95, 0.55, n_suspects), "is_issue": True,
        "rank": np.arange(1, n_suspects + 1), "status": "audited"})
    classes_frame = pd.DataFrame({"label": classes, "n": 5, "n_issues": 1, "estimated_noise_rate": 0.2,
                                  "most_confused_with": [None] + classes[:-1]})
    record = RunRecord(images_root="/nonexistent", labels_csv="labels.csv", labels_sha256="", path_column="path",
                       label_column="label", delimiter=",", classes_file=None, classes=classes, method="elr",
                       folds=1, train={})
    view = RunView(Path("run"), record, {"rows": n_suspects, "audited": n_suspects}, samples, classes_frame,
                   transition_frame)
    thumbnails = Thumbnails(np.zeros((n_suspects, 8, 8, 3), np.uint8), np.zeros(n_suspects, bool))
    return view, samples, thumbnails


def test_labels_and_paths_are_escaped():
    from labelaudit.report.html import render_report_html

    hostile = ['a<b>"&\'', "<script>alert(1)</script>", "plain"]
    view, samples, thumbnails = synthetic_view(hostile, 6, path_prefix="<img src=x onerror=alert(2)>")
    text = render_report_html(view, samples, thumbnails)
    page = ReportPage(text)
    assert page.unbalanced == [] and len(page.script_sources) == 1
    assert [(c["given"], c["suggested"]) for c in page.cards] == list(zip(samples["given_label"],
                                                                         samples["suggested_label"]))
    assert all(c["img"] is None and c["placeholder"] for c in page.cards)  # no such files: placeholders
    assert all(value.startswith(("data:", "#")) for _, _, value in page.urls)


def test_heatmap_numbers_only_while_cells_are_large():
    from labelaudit.report.html import HEATMAP_TEXT_MAX_CLASSES, render_report_html

    few = [f"c{i}" for i in range(3)]
    many = [f"c{i}" for i in range(HEATMAP_TEXT_MAX_CLASSES + 1)]
    text_few = render_report_html(*synthetic_view(few, 2))
    text_many = render_report_html(*synthetic_view(many, 2))
    printed_probability = re.compile(r"class=\"cell\"[^>]*>(?:\.\d\d|1)</td>")
    assert 'class="heatmap"' in text_few and len(printed_probability.findall(text_few)) >= len(few)
    assert 'class="heatmap dense"' in text_many and not printed_probability.search(text_many)
    assert ReportPage(text_many).heatmap_cells == len(many) ** 2
    assert "–</td>" in text_few  # the class with no confusion partner shows a dash


def test_heatmap_marks_rows_without_trusted_examples():
    from labelaudit.report.html import render_report_html

    view, samples, thumbnails = synthetic_view(["a", "b", "c"], 3)
    assert "identity placeholder" not in render_report_html(view, samples, thumbnails)
    view.transition["no_trusted_examples"] = view.transition["true_label"] == "b"
    text = render_report_html(view, samples, thumbnails)
    assert re.findall(r'<th scope="row">(\w+) <abbr', text) == ["b"]
    assert "no trusted example of this class" in text
