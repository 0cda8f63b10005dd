"""``suspects.png``: the top suspects as one PNG contact sheet (thumbnail, rank, error probability,
given -> suggested label, path), small enough to paste into a chat or keep as a CI artefact."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_path
from .views import Thumbnails

SHEET_COLUMNS = 8
SHEET_CELLS = 48  # the sheet shows at most this many suspects
MARGIN = 12
PADDING = 6
MIN_CELL_WIDTH = 140  # room for "triangle -> square" under a small thumbnail
HEADER_HEIGHT = 30
FONT_SIZE = 12
LINE_HEIGHT = 15
CAPTION_LINES = 4  # rank + probability, given, suggested, path

BACKGROUND = (244, 246, 249)
CARD = (255, 255, 255)
BORDER = (220, 225, 232)
INK = (29, 36, 48)
MUTED = (93, 104, 120)
GIVEN = (190, 50, 25)
SUGGESTED = (25, 120, 75)
PLACEHOLDER = (230, 233, 238)


@dataclass(frozen=True)
class SheetLayout:
    """Pixel geometry of a contact sheet with ``n_cells`` cells of ``thumb_size`` px thumbnails."""

    n_cells: int
    thumb_size: int
    columns: int
    rows: int
    cell_width: int
    cell_height: int

    @property
    def width(self) -> int:
        return 2 * MARGIN + self.columns * self.cell_width

    @property
    def height(self) -> int:
        return HEADER_HEIGHT + 2 * MARGIN + self.rows * self.cell_height

    def cell_origin(self, index: int) -> tuple[int, int]:
        row, column = divmod(index, self.columns)
        return MARGIN + column * self.cell_width, HEADER_HEIGHT + MARGIN + row * self.cell_height

    def thumbnail_box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of cell ``index``'s thumbnail, centred at the top of the cell."""
        x, y = self.cell_origin(index)
        left = x + (self.cell_width - self.thumb_size) // 2
        top = y + PADDING
        return left, top, left + self.thumb_size, top + self.thumb_size


def sheet_layout(n_cells: int, thumb_size: int, columns: int = SHEET_COLUMNS) -> SheetLayout:
    """Cells fill rows of ``columns``; fewer cells than columns make a narrower single row."""
    used_columns = max(1, min(columns, n_cells))
    return SheetLayout(
        n_cells=n_cells,
        thumb_size=thumb_size,
        columns=used_columns,
        rows=max(1, math.ceil(n_cells / used_columns)),
        cell_width=max(thumb_size + 2 * PADDING, MIN_CELL_WIDTH),
        cell_height=thumb_size + 3 * PADDING + CAPTION_LINES * LINE_HEIGHT,
    )


def render_contact_sheet(suspects: pd.DataFrame, thumbnails: Thumbnails, *, title: str = "",
                         columns: int = SHEET_COLUMNS) -> Image.Image:
    """One RGB image: a cell per row of ``suspects`` (rank order as given) with its thumbnail.

    suspects: rows of samples (path, given_label, suggested_label, error_probability, rank);
    thumbnails: one (S, S, 3) image per row. Not-found images get a grey placeholder.
    """
    if len(thumbnails) != len(suspects):
        raise ValueError(f"{len(thumbnails)} thumbnails for {len(suspects)} suspects")
    font = ImageFont.load_default(size=FONT_SIZE)
    thumb_size = thumbnails.images.shape[1] if len(thumbnails) else 96
    layout = sheet_layout(len(suspects), thumb_size, columns)
    if suspects.empty:
        layout = sheet_layout(SHEET_COLUMNS // 2, thumb_size, columns)
    sheet = Image.new("RGB", (layout.width, layout.height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    title_top = (HEADER_HEIGHT + MARGIN - FONT_SIZE) // 2 + 2
    draw.text((MARGIN, title_top), _fit(draw, title, font, layout.width - 2 * MARGIN), fill=INK, font=font)
    if suspects.empty:
        draw.text((MARGIN, HEADER_HEIGHT + MARGIN), "No rows are flagged as likely label errors.", fill=MUTED,
                  font=font)
        return sheet
    for index, row in enumerate(suspects.itertuples(index=False)):
        _draw_cell(sheet, draw, font, layout, index, row, thumbnails.images[index], bool(thumbnails.found[index]))
    return sheet


def write_contact_sheet(target: str | Path, suspects: pd.DataFrame, thumbnails: Thumbnails, *,
                        title: str = "") -> Path:
    """Render and save the sheet as PNG, atomically."""
    image = render_contact_sheet(suspects, thumbnails, title=title)
    target = Path(target)
    with atomic_path(target) as temporary:
        image.save(temporary, format="PNG")
    return target


def _draw_cell(sheet: Image.Image, draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, layout: SheetLayout,
               index: int, row, image: np.ndarray, found: bool) -> None:
    x, y = layout.cell_origin(index)
    inner = (x + 3, y + 3, x + layout.cell_width - 4, y + layout.cell_height - 4)
    draw.rounded_rectangle(inner, radius=6, fill=CARD, outline=BORDER)
    box = layout.thumbnail_box(index)
    if found:
        sheet.paste(Image.fromarray(image), box[:2])
    else:
        draw.rectangle(box, fill=PLACEHOLDER)
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), "not found", fill=MUTED, font=font, anchor="mm")
    text_left = x + 2 * PADDING
    text_width = layout.cell_width - 4 * PADDING
    line_top = box[3] + PADDING
    lines = [
        (f"#{int(row.rank)}   p {float(row.error_probability):.2f}", INK, False),
        (f"given {row.given_label}", GIVEN, False),
        (f"-> {row.suggested_label}", SUGGESTED, False),
        (str(row.path), MUTED, True),
    ]
    for number, (text, colour, keep_end) in enumerate(lines):
        draw.text((text_left, line_top + number * LINE_HEIGHT), _fit(draw, text, font, text_width, keep_end=keep_end),
                  fill=colour, font=font)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int, *,
         keep_end: bool = False) -> str:
    """``text`` shortened with an ellipsis until it fits ``width`` pixels; ``keep_end`` cuts the start
    instead (paths: the file name is the informative part)."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(_elide(text, keep_end), font=font) > width:
        text = text[1:] if keep_end else text[:-1]
    return _elide(text, keep_end)


def _elide(text: str, keep_end: bool) -> str:
    return "…" + text if keep_end else text + "…"
