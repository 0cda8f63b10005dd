"""Terminal output: progress bars on stderr, tables and summaries on stdout.

On a terminal, output fits its width. Redirected to a file, a pipe or a CI log it is not wrapped at all
(rich would wrap at 80 columns), unless ``COLUMNS`` sets a width.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

#: the width of output that is not a terminal: wide enough that no line of ours wraps
UNWRAPPED_WIDTH = 10_000


class OutputConsole(Console):
    """A rich Console that does not hard-wrap when its file is not a terminal."""

    @property
    def size(self) -> ConsoleDimensions:
        size = super().size
        if self._width is None and not self.is_terminal and "COLUMNS" not in self._environ:
            return ConsoleDimensions(UNWRAPPED_WIDTH, size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)


stdout = OutputConsole(highlight=False)
stderr = OutputConsole(stderr=True, highlight=False)


class RichProgress:
    """Progress bars for decoding and each training stage; redrawn at most 4 times a second.

    The display starts with the first bar, so an error found before any work prints nothing but its
    ``Error:`` line.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None
        self._task = None
        self._decode_task = None

    def __enter__(self) -> "RichProgress":
        return self

    def _display(self) -> Progress:
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                console=stderr, refresh_per_second=4, transient=False,
            )
            self._progress.__enter__()
        return self._progress

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if self._progress is not None:
            if exc_type is not None:  # on an error, clear the bars so the one `Error:` line stands alone
                self._progress.live.transient = True
            self._progress.__exit__(exc_type, *rest)

    def decode(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._decode_task is None:
            self._decode_task = self._display().add_task("decoding images", total=total, status="")
        self._display().update(self._decode_task, completed=done)

    def start(self, description: str, total_steps: int) -> None:
        if self.enabled:
            self._task = self._display().add_task(description, total=total_steps, status="")

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def epoch_done(self, epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        if self._progress is None or self._task is None:
            return
        parts = [f"epoch {epoch}/{epochs}", f"loss {metrics['train_loss']:.3f}"]
        if "val_accuracy" in metrics:
            parts.append(f"val acc {metrics['val_accuracy']:.3f}")
        self._progress.update(self._task, status="  ".join(parts))

    def finish(self) -> None:
        self._task = None


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()
