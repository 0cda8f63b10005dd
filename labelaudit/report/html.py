"""The run as one self-contained HTML page: summary, per-class table, T heatmap, a filterable grid of suspects.

Everything is inline (CSS, a few lines of JavaScript, thumbnails as ``data:`` URIs), so the file opens
offline, can be mailed or attached to a CI run, and never makes a network request. The page applies
the class filter named in its URL hash (``#class=circle``, ``#class=circle&by=suggested``), so a
filtered view is a link.
"""

from __future__ import annotations

import base64
import io
import math
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .. import __version__
from .files import atomic_path
from .tables import TransitionEstimate
from .views import RunView, Thumbnails, skipped_rows, transition_estimate

JPEG_QUALITY = 85
SKIPPED_LISTED = 200  # skipped rows listed by path; the counts per reason cover all of them
HEATMAP_TEXT_MAX_CLASSES = 16  # above this the cells are too small for numbers (tooltips keep them)

_BLUE = (31, 87, 165)  # diagonal of T: labels kept
_RED = (205, 62, 30)  # off-diagonal of T: confusions


def write_report_html(target: str | Path, view: RunView, suspects: pd.DataFrame, thumbnails: Thumbnails, *,
                      given_label: str | None = None, caption: str | None = None, issue_sections: str = "") -> Path:
    """Write the page for ``view`` with ``suspects`` (rows of samples) and their ``thumbnails``, atomically;
    ``issue_sections``: the data-issue sections' HTML (:func:`labelaudit.report.issues_view.render_issue_sections`)."""
    page = render_report_html(view, suspects, thumbnails, given_label=given_label, caption=caption,
                              issue_sections=issue_sections)
    target = Path(target)
    with atomic_path(target) as temporary:
        temporary.write_text(page, encoding="utf-8")
    return target


def render_report_html(view: RunView, suspects: pd.DataFrame, thumbnails: Thumbnails, *,
                       given_label: str | None = None, caption: str | None = None, issue_sections: str = "") -> str:
    """The whole page as a string. ``thumbnails`` holds one image per row of ``suspects``; ``caption`` says
    what they are (e.g. "top 50 rows by rank, 12 of them flagged"; default "top N"). Rows that are not
    flagged (``is_issue`` false) are marked on their card."""
    if len(thumbnails) != len(suspects):
        raise ValueError(f"{len(thumbnails)} thumbnails for {len(suspects)} suspects")
    title = f"labelaudit report — {Path(view.record.labels_csv).name}"
    body = "\n".join([
        _header(view),
        _summary_section(view.summary),
        '<div class="columns">',
        _classes_section(view),
        _heatmap_section(transition_estimate(view), view.class_names),
        "</div>",
        _suspects_section(view, suspects, thumbnails, given_label, caption),
        issue_sections,
        _skipped_section(skipped_rows(view.samples)),
        f'<footer>labelaudit {escape(__version__)} · run directory {escape(str(view.out))} · '
        "a self-contained page: no network access</footer>",
    ])
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


def thumbnail_data_uri(image: np.ndarray, quality: int = JPEG_QUALITY) -> str:
    """(S, S, 3) uint8 RGB -> ``data:image/jpeg;base64,…``."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


# --------------------------------------------------------------------------- sections

def _header(view: RunView) -> str:
    settings = view.summary.get("settings", {})
    method = settings.get("method", view.record.method)
    method_settings = settings.get("method_settings", {})
    if "elr_beta" in method_settings:
        method += f" (β={method_settings['elr_beta']}, λ={method_settings['elr_lambda']})"
    model = settings.get("train", {}).get("model") or view.record.train.get("model", "")
    facts = [
        ("labels", view.record.labels_csv),
        ("images", view.record.images_root),
        ("method", method),
        ("model", model),
        ("T estimator", view.summary.get("transition_estimator", "")),
    ]
    items = "".join(f"<div><dt>{escape(name)}</dt><dd>{escape(str(value))}</dd></div>"
                    for name, value in facts if value)
    return f'<header><h1>labelaudit report</h1><dl class="facts">{items}</dl></header>'


def _summary_section(summary: dict[str, Any]) -> str:
    rows, audited, skipped = summary.get("rows", 0), summary.get("audited", 0), summary.get("skipped", 0)
    rate = summary.get("estimated_error_rate", 0.0)
    cards = [
        ("rows in the CSV", f"{rows:,}", ""),
        ("audited", f"{audited:,}", f"{skipped:,} skipped" if skipped else "none skipped"),
        ("flagged as likely errors", f"{summary.get('n_issues', 0):,}", "suggested label ≠ given label"),
        ("estimated wrong labels", f"{rate:.1%}", f"about {summary.get('estimated_errors', 0):,.0f} rows"),
        ("label health", f"{summary.get('label_health', 1 - rate):.1%}", "1 − estimated error rate"),
    ]
    html = "".join(f'<div class="stat"><div class="value">{escape(value)}</div><div class="name">{escape(name)}'
                   f'</div><div class="note">{escape(note)}</div></div>' for name, value, note in cards)
    return f'<section id="summary" class="stats" aria-label="summary">{html}</section>'


def _classes_section(view: RunView) -> str:
    rows = []
    for row in view.classes.itertuples(index=False):
        rate = float(row.estimated_noise_rate) if pd.notna(row.estimated_noise_rate) else math.nan
        width = 0.0 if math.isnan(rate) else min(max(rate, 0.0), 1.0) * 100
        label = escape(str(row.label))
        rows.append(
            f'<tr><th scope="row"><a href="#{_hash_for(str(row.label))}">{label}</a></th>'
            f'<td class="num">{int(row.n):,}</td><td class="num">{int(row.n_issues):,}</td>'
            f'<td class="rate"><span class="track"><span class="bar" style="width:{width:.1f}%"></span></span>'
            f'<span class="pct">{_percent(rate)}</span></td>'
            f"<td>{escape(_text(row.most_confused_with) or '–')}</td></tr>"
        )
    return (
        '<section id="classes" class="panel"><h2>Per class</h2>'
        '<table class="classes"><thead><tr><th scope="col">class</th><th scope="col" class="num">rows</th>'
        '<th scope="col" class="num">flagged</th><th scope="col">est. noise rate</th>'
        '<th scope="col">most confused with</th></tr></thead><tbody>'
        + "".join(rows) + "</tbody></table>"
        '<p class="hint">Rows given each label; the noise rate is the mean error probability of those rows. '
        "Click a class to filter the suspects.</p></section>"
    )


def _heatmap_section(estimate: TransitionEstimate | None, classes: list[str]) -> str:
    if estimate is None:
        return '<section id="transition" class="panel"><h2>Noise transition matrix</h2><p>No estimate.</p></section>'
    show_numbers = len(classes) <= HEATMAP_TEXT_MAX_CLASSES
    head = "".join(f'<th scope="col" class="col"><span>{escape(label)}</span></th>' for label in classes)
    placeholder_rows = getattr(estimate, "no_trusted_examples", None)
    if placeholder_rows is None:
        placeholder_rows = np.zeros(len(classes), bool)
    body = []
    for i, true_label in enumerate(classes):
        cells = []
        for j, noisy_label in enumerate(classes):
            p = estimate.matrix[i, j]
            tip = f"true {true_label} → labelled {noisy_label}: "
            if np.isnan(p):
                cells.append(f'<td class="cell empty" title="{escape(tip)}no estimate">–</td>')
                continue
            tip += f"{p:.3f}"
            if not (np.isnan(estimate.ci_low[i, j]) or np.isnan(estimate.ci_high[i, j])):
                tip += f" (95% CI {estimate.ci_low[i, j]:.3f}–{estimate.ci_high[i, j]:.3f})"
            background, ink = _cell_colours(float(p), diagonal=i == j)
            text = _short_probability(float(p)) if show_numbers else ""
            cells.append(f'<td class="cell" style="background:{background};color:{ink}" '
                         f'title="{escape(tip)}">{text}</td>')
        marker = ' <abbr title="no trusted example: identity placeholder">*</abbr>' if placeholder_rows[i] else ""
        body.append(f'<tr><th scope="row">{escape(true_label)}{marker}</th>{"".join(cells)}</tr>')
    footnote = (" * no trusted example of this class: its row is an identity placeholder."
                if placeholder_rows.any() else "")
    return (
        '<section id="transition" class="panel"><h2>Noise transition matrix '
        f'<span class="tag">{escape(estimate.estimator)}</span></h2>'
        f'<div class="heatmap-wrap"><table class="heatmap{"" if show_numbers else " dense"}" id="heatmap">'
        f'<thead><tr><th class="corner">true ↓ · labelled as →</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        '<p class="hint">T[i, j] = P(labelled j | true class i). '
        '<span class="key keep"></span> label kept <span class="key swap"></span> confusion; '
        f"hover a cell for its 95% interval.{footnote}</p></section>"
    )


def _suspects_section(view: RunView, suspects: pd.DataFrame, thumbnails: Thumbnails,
                      given_label: str | None, caption: str | None = None) -> str:
    heading = "Most suspicious labels" + (f" given “{given_label}”" if given_label else "")
    if suspects.empty:
        return (f'<section id="suspects" class="panel"><h2>{escape(heading)}</h2>'
                '<p class="empty-note">No rows are flagged as likely label errors.</p></section>')
    options = "".join(f'<option value="{escape(label)}">{escape(label)}</option>' for label in view.class_names)
    cards = [_card(row, thumbnails.images[index], bool(thumbnails.found[index]))
             for index, row in enumerate(suspects.itertuples(index=False))]
    missing = int((~thumbnails.found).sum())
    missing_note = (f'<p class="hint">{missing} image(s) could not be read from the image folder; '
                    "they are shown as placeholders.</p>" if missing else "")
    return (
        f'<section id="suspects" class="panel"><h2>{escape(heading)} '
        f'<span class="tag">{escape(caption or f"top {len(suspects):,}")}</span></h2>'
        '<div class="controls"><label>class <select id="class-filter"><option value="">all classes</option>'
        f"{options}</select></label>"
        '<label>match <select id="class-by"><option value="given">given label</option>'
        '<option value="suggested">suggested label</option><option value="either">either</option></select></label>'
        f'<span id="shown-count" class="count">{len(suspects):,} shown</span></div>'
        f"{missing_note}"
        f'<div id="suspect-grid" class="grid">{"".join(cards)}</div>'
        '<p id="no-match" class="empty-note" hidden>No suspects match this filter.</p></section>'
    )


def _card(row: Any, image: np.ndarray, found: bool) -> str:
    path = str(row.path)
    if found:
        picture = (f'<img src="{thumbnail_data_uri(image)}" width="{image.shape[1]}" height="{image.shape[0]}" '
                   f'alt="{escape(path)}" decoding="async" loading="lazy">')
    else:
        picture = '<div class="thumb missing" role="img" aria-label="image not found">image<br>not found</div>'
    probability = float(row.error_probability)
    flagged = getattr(row, "is_issue", True) == True  # noqa: E712 (numpy bool, None or NaN)
    return (
        f'<figure class="card" data-given="{escape(str(row.given_label))}" '
        f'data-suggested="{escape(str(row.suggested_label))}" data-rank="{int(row.rank)}" '
        f'data-flagged="{"true" if flagged else "false"}">{picture}'
        f'<figcaption><div class="top"><span class="rank">#{int(row.rank)}</span>'
        + ("" if flagged else '<span class="unflagged" title="not flagged as a likely error">not flagged</span>')
        + f'<span class="prob" title="error probability" style="--p:{probability:.3f}">{probability:.2f}</span></div>'
        f'<div class="labels"><span class="given" title="given label">{escape(str(row.given_label))}</span>'
        f'<span class="arrow">→</span>'
        f'<span class="suggested" title="suggested label">{escape(str(row.suggested_label))}</span></div>'
        f'<div class="path" title="{escape(path)}">{escape(path)}</div></figcaption></figure>'
    )


def _skipped_section(skipped: pd.DataFrame) -> str:
    if skipped.empty:
        return ""
    counts = skipped["status"].value_counts()
    reasons = "".join(f"<tr><td>{escape(str(reason))}</td><td class=\"num\">{int(n):,}</td></tr>"
                      for reason, n in counts.items())
    listed = skipped.head(SKIPPED_LISTED)
    rows = "".join(f"<tr><td class=\"path\">{escape(str(r.path))}</td><td>{escape(_text(r.given_label))}</td>"
                   f"<td>{escape(str(r.status))}</td></tr>" for r in listed.itertuples(index=False))
    more = f" (first {SKIPPED_LISTED})" if len(skipped) > SKIPPED_LISTED else ""
    return (
        f'<section id="skipped" class="panel"><h2>Skipped rows <span class="tag">{len(skipped):,}</span></h2>'
        '<table class="reasons"><thead><tr><th scope="col">reason</th><th scope="col" class="num">rows</th></tr>'
        f"</thead><tbody>{reasons}</tbody></table>"
        f"<details><summary>List them{more}</summary><table class=\"skipped\"><thead><tr><th scope=\"col\">path"
        '</th><th scope="col">label</th><th scope="col">reason</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></details></section>"
    )


# --------------------------------------------------------------------------- formatting

def _cell_colours(probability: float, *, diagonal: bool) -> tuple[str, str]:
    """Background and text colour of one heatmap cell; sqrt scale so small confusions still show."""
    strength = math.sqrt(min(max(probability, 0.0), 1.0))
    target = _BLUE if diagonal else _RED
    rgb = [round(255 + (channel - 255) * strength) for channel in target]
    ink = "#fff" if strength > 0.6 else "#1d2430"
    return f"rgb({rgb[0]},{rgb[1]},{rgb[2]})", ink


def _short_probability(probability: float) -> str:
    if probability < 0.005:
        return ""
    return "1" if probability >= 0.995 else f"{probability:.2f}".lstrip("0")


def _percent(rate: float) -> str:
    return "–" if math.isnan(rate) else f"{rate:.1%}"


def _text(value: Any) -> str:
    """``value`` as text; None and NaN (missing values in Parquet columns) as ""."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _hash_for(label: str) -> str:
    from urllib.parse import quote

    return "class=" + escape(quote(label, safe=""))


# --------------------------------------------------------------------------- inline CSS and script

_CSS = """
:root{--ink:#1d2430;--muted:#5d6878;--line:#e2e6ec;--bg:#f4f6f9;--panel:#fff;--blue:#1f57a5;--red:#cd3e1e;
--green:#1e7d4f}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
"Helvetica Neue",Arial,sans-serif}
main{max-width:1400px;margin:0 auto;padding:20px 24px 40px}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 28px;margin-bottom:16px}
h1{font-size:22px;margin:0;letter-spacing:-.01em}
h2{font-size:16px;margin:0 0 12px;display:flex;align-items:center;gap:8px}
.facts{display:flex;flex-wrap:wrap;gap:4px 20px;margin:0;color:var(--muted);font-size:13px}
.facts div{display:flex;gap:6px;min-width:0}.facts dt{font-weight:600}.facts dd{margin:0;overflow-wrap:anywhere}
.stats{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px;margin-bottom:16px}
.stat,.panel{background:var(--panel);border:1px solid var(--line);border-radius:10px;
box-shadow:0 1px 2px rgba(20,30,50,.05)}
.stat{padding:12px 16px}.stat .value{font-size:26px;font-weight:650;font-variant-numeric:tabular-nums}
.stat .name{font-weight:600}.stat .note{color:var(--muted);font-size:12px}
.panel{padding:16px 18px;margin-bottom:16px;min-width:0}
.columns{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px;align-items:start}
.columns .panel{margin-bottom:0}.columns{margin-bottom:16px}
.tag{font-size:12px;font-weight:600;color:var(--muted);background:var(--bg);border:1px solid var(--line);
border-radius:999px;padding:1px 9px}
table{border-collapse:collapse}
.classes,.skipped{width:100%}.reasons{min-width:320px}
.classes th,.classes td,.reasons td,.reasons th,.skipped td,.skipped th{padding:5px 8px;
border-bottom:1px solid var(--line);text-align:left}
thead th{font-size:12px;color:var(--muted);font-weight:600}
.num{text-align:right!important;font-variant-numeric:tabular-nums}
.classes a{color:var(--blue);text-decoration:none;font-weight:600}.classes a:hover{text-decoration:underline}
.rate{white-space:nowrap}
.rate .track{display:inline-block;width:72px;height:8px;border-radius:4px;background:var(--bg);
vertical-align:middle;overflow:hidden;margin-right:8px}
.rate .bar{display:block;height:100%;background:#e2775a;border-radius:4px}
.rate .pct{font-variant-numeric:tabular-nums}
.hint{color:var(--muted);font-size:12px;margin:10px 0 0}
.heatmap-wrap{overflow-x:auto}
.heatmap{font-size:12px;font-variant-numeric:tabular-nums}
.heatmap th{font-weight:600;padding:3px 6px;white-space:nowrap}
.heatmap tbody th{text-align:right}
.heatmap .corner{font-size:11px;color:var(--muted);font-weight:500;text-align:right;vertical-align:bottom}
.heatmap th.col{vertical-align:bottom;height:80px;padding:0 0 4px}
.heatmap th.col span{display:inline-block;writing-mode:vertical-rl;transform:rotate(180deg)}
.heatmap .cell{width:38px;min-width:22px;height:30px;text-align:center;border:1px solid #fff;border-radius:3px}
.heatmap .empty{color:var(--muted);background:var(--bg)}
.heatmap.dense .cell{width:12px;min-width:12px;height:12px;border-width:0;border-radius:0}
.heatmap.dense th{font-size:10px;font-weight:500;padding:0 3px;line-height:12px}
.key{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-2px;margin:0 2px 0 8px}
.key.keep{background:var(--blue)}.key.swap{background:var(--red)}
.controls{display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center;margin-bottom:12px}
.controls label{font-weight:600;color:var(--muted);display:flex;gap:6px;align-items:center}
select{font:inherit;padding:4px 8px;border:1px solid var(--line);border-radius:6px;background:#fff;color:var(--ink)}
.count{color:var(--muted)}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(128px,1fr));gap:12px}
.card{margin:0;padding:8px;border:1px solid var(--line);border-radius:8px;background:#fff;display:flex;
flex-direction:column;align-items:center;gap:6px;content-visibility:auto;contain-intrinsic-size:128px 180px}
.card[hidden],[hidden]{display:none!important}
.card img,.thumb{width:96px;height:96px;border-radius:4px;display:block;background:var(--bg)}
.thumb.missing{display:flex;align-items:center;justify-content:center;text-align:center;font-size:11px;
color:var(--muted);border:1px dashed #c3cad4}
figcaption{width:100%;font-size:12px;min-width:0}
.card .top{display:flex;justify-content:space-between;align-items:center}
.rank{color:var(--muted);font-variant-numeric:tabular-nums}
.unflagged{font-size:10px;color:var(--muted);border:1px solid var(--line);border-radius:4px;padding:0 3px}
.prob{font-weight:700;font-variant-numeric:tabular-nums;padding:0 6px;border-radius:999px;color:#fff;
background:color-mix(in srgb,var(--red) calc(var(--p)*100%),#8b96a5)}
.labels{display:flex;flex-wrap:wrap;align-items:center;gap:0 4px;margin-top:2px;font-weight:600;line-height:1.3}
.given{color:var(--red);text-decoration:line-through;text-decoration-thickness:1px}
.suggested{color:var(--green)}.arrow{color:var(--muted);font-weight:400}
.path{color:var(--muted);white-space:nowrap;overflow:hidden;text-overflow:ellipsis;font-size:11px}
.empty-note{color:var(--muted)}
details summary{cursor:pointer;color:var(--blue);margin-top:10px}
td.path{overflow-wrap:anywhere}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:8px}
.dupset{margin-bottom:14px}.dupset h3,#quality h3{font-size:14px;margin:8px 0}
.issue-card{margin:0;padding:8px;border:1px solid var(--line);border-radius:8px;background:#fff;display:flex;
flex-direction:column;align-items:center;gap:6px}.issue-card img{width:96px;height:96px;border-radius:4px}
.dupset .row{display:flex;gap:10px;overflow-x:auto;padding-bottom:4px}.dupset .issue-card{flex:0 0 128px}
.tag.bad{background:var(--red);color:#fff}.split,.score{color:var(--muted);font-weight:400}
"""

# Filters the suspect cards by class; the state lives in the URL hash so a filtered view is a link.
_SCRIPT = """
(function () {
  var grid = document.getElementById("suspect-grid");
  if (!grid) return;
  var cards = grid.children, byClass = document.getElementById("class-filter"),
      by = document.getElementById("class-by"), count = document.getElementById("shown-count"),
      none = document.getElementById("no-match");
  function apply() {
    var label = byClass.value, mode = by.value, shown = 0;
    for (var i = 0; i < cards.length; i++) {
      var d = cards[i].dataset;
      var show = !label || (mode !== "suggested" && d.given === label) || (mode !== "given" && d.suggested === label);
      cards[i].hidden = !show;
      if (show) shown++;
    }
    count.textContent = shown + (label ? " of " + cards.length : "") + " shown";
    none.hidden = shown > 0;
  }
  function fromHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    byClass.value = params.get("class") || "";
    if (byClass.selectedIndex < 0) byClass.value = "";
    by.value = params.get("by") || "given";
    if (by.selectedIndex < 0) by.value = "given";
    apply();
  }
  function toHash() {
    var params = new URLSearchParams();
    if (byClass.value) params.set("class", byClass.value);
    if (by.value !== "given") params.set("by", by.value);
    var hash = params.toString();
    try { history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search); }
    catch (e) { location.hash = hash; }
    apply();
  }
  byClass.addEventListener("change", toHash);
  by.addEventListener("change", toHash);
  window.addEventListener("hashchange", function () {
    fromHash();
    document.getElementById("suspects").scrollIntoView();
  });
  fromHash();
})();
"""
