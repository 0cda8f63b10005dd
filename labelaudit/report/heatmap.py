"""``transition.png``: the noise transition matrix as an annotated heatmap (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .files import atomic_path

# Beyond this many classes the per-cell numbers would be unreadable; the colours stay.
MAX_ANNOTATED_CLASSES = 30


def plot_transition(matrix: np.ndarray, classes: list[str], target: str | Path, *, title: str,
                    missing_rows: np.ndarray | None = None) -> Path:
    """Write a heatmap of ``matrix`` (K, K), T[i, j] = P(noisy j | true i), to ``target`` (PNG).

    Rows are true classes, columns the labels annotators wrote; each cell shows its value.
    ``missing_rows`` (K,) bool marks placeholder identity rows (e.g. no trusted example), whose
    class name gets a trailing ``*`` and a footnote.
    """
    import matplotlib

    matrix = np.asarray(matrix, dtype=np.float64)
    n_classes = len(classes)
    if matrix.shape != (n_classes, n_classes):
        raise ValueError(f"matrix has shape {matrix.shape} but there are {n_classes} classes")
    missing = np.zeros(n_classes, bool) if missing_rows is None else np.asarray(missing_rows, bool)
    row_names = [f"{name} *" if flag else name for name, flag in zip(classes, missing)]

    from matplotlib.figure import Figure  # a Figure needs no pyplot state and no display
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    side = min(max(4.0, 0.55 * n_classes + 2.5), 24.0)
    figure = Figure(figsize=(side + 1.2, side), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap=matplotlib.colormaps["Blues"], vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="P(labelled j | true i)")
    axes.set_xticks(range(n_classes), labels=classes, rotation=45, ha="right", rotation_mode="anchor")
    axes.set_yticks(range(n_classes), labels=row_names)
    axes.set_xlabel("given (noisy) label j")
    axes.set_ylabel("true label i")
    axes.set_title(title)
    if n_classes <= MAX_ANNOTATED_CLASSES:
        font_size = max(5.0, min(10.0, 120.0 / n_classes))
        for i in range(n_classes):
            for j in range(n_classes):
                value = matrix[i, j]
                axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=font_size,
                          color="white" if value > 0.6 else "black")
    if missing.any():
        figure.text(0.01, 0.01, "* no trusted example: identity row (not estimated)", fontsize=8)
    figure.tight_layout()
    target = Path(target)
    with atomic_path(target) as temporary:
        figure.savefig(temporary, format="png")
    return target
