"""Image-quality defects from the raw measures, judged against the dataset's own distribution.

A picture is only defective compared with its neighbours in the dataset: a scan of night photographs
is dark throughout, an X-ray set is grey throughout. So every rule compares a measure with the
dataset's median (over the images that were decoded), the way cleanvision normalises its scores, and
a rule that only makes sense in a mixed dataset (``grayscale``) only applies there:

==================  ======================================================================================
``dark``            ``brightness_p99`` below ``dark_ratio`` x the median: even the brightest part of the
                    picture is darker than the typical picture's brightest part by that factor
``bright``          ``1 - brightness_p05`` below ``bright_ratio`` x its median: even the darkest part is
                    nearly white (over-exposed)
``blurry``          ``sharpness`` below ``blurry_ratio`` x the median (the measure is contrast-normalised,
                    so a dark picture is not also called blurry)
``low_information`` ``entropy`` below ``low_information_ratio`` x the median (a blank or nearly blank
                    picture)
``grayscale``       ``colourfulness`` below ``grayscale_colourfulness`` in a dataset where at least
                    ``colour_share`` of the pictures are colourful (above ``colourful``)
``odd_aspect``      width / height differs from the median aspect ratio by more than ``aspect_factor``
                    times (either way)
``odd_size``        the side of a square of the same area, sqrt(width x height), is below the median's
                    / ``small_factor`` (a tiny original, upscaled for training) or above median x
                    ``large_factor``
==================  ======================================================================================

The defaults were chosen on Fashion-MNIST (10,000 test images): a picture darkened to 30% of its
brightness, over-exposed (1.6 x pixel + 150), or blurred with a Gaussian of radius 1 pixel at 28 px,
falls below its rule while fewer than 0.2% of the untouched pictures do (``bright_ratio`` 0.35 missed
every over-exposed one, 0.45 to 0.6 found all 300 and no untouched picture); cleanvision's own thresholds (dark: 99th percentile of
brightness below 0.32; low information: entropy below 1.5 bits; odd aspect ratio: below 0.35; odd
size: 10x from the median) are of the same size for a dataset whose median picture is well exposed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..data.measures import MEASURE_NAMES

QUALITY_ISSUES = ("dark", "bright", "blurry", "low_information", "grayscale", "odd_aspect", "odd_size")
_COLUMN = {name: i for i, name in enumerate(MEASURE_NAMES)}


@dataclass(frozen=True)
class QualityRules:
    """The factors of each rule (see the module docstring)."""

    dark_ratio: float = 0.4
    bright_ratio: float = 0.5
    blurry_ratio: float = 0.5
    low_information_ratio: float = 0.3
    grayscale_colourfulness: float = 0.005
    colourful: float = 0.02
    colour_share: float = 0.5
    aspect_factor: float = 2.5
    small_factor: float = 4.0
    large_factor: float = 10.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class QualityFlags:
    """Which quality defects each row has.

    flags: (N, len(QUALITY_ISSUES)) bool, column j meaning ``QUALITY_ISSUES[j]``; rows whose measures
    are missing (NaN) have none. thresholds: the value each rule compared with, in the measure's units
    (None when the rule did not apply to this dataset).
    """

    flags: np.ndarray
    thresholds: dict[str, float | None]

    def issue_lists(self) -> list[list[str]]:
        """Per row, the names of its defects (empty list when none)."""
        names = np.asarray(QUALITY_ISSUES, dtype=object)
        return [list(names[row]) for row in self.flags]

    def counts(self) -> dict[str, int]:
        """Rows per defect, in ``QUALITY_ISSUES`` order."""
        return {name: int(n) for name, n in zip(QUALITY_ISSUES, self.flags.sum(axis=0))}


def quality_flags(measures: np.ndarray, rules: QualityRules | None = None) -> QualityFlags:
    """Flag the defects of every row against the dataset's medians.

    Parameters
    ----------
    measures
        ``(N, N_MEASURES)`` raw measures in ``MEASURE_NAMES`` order (:mod:`labelaudit.data.measures`);
        NaN rows (images without measures) are ignored for the medians and get no flag.
    rules
        The factors; default :class:`QualityRules`.

    Returns
    -------
    QualityFlags
    """
    rules = rules or QualityRules()
    measures = np.asarray(measures, dtype=np.float64)
    if measures.ndim != 2 or measures.shape[1] != len(MEASURE_NAMES):
        raise ValueError(f"measures must have shape (N, {len(MEASURE_NAMES)}), got {measures.shape}")
    known = np.isfinite(measures).all(axis=1)
    flags = np.zeros((len(measures), len(QUALITY_ISSUES)), dtype=bool)
    thresholds: dict[str, float | None] = {name: None for name in QUALITY_ISSUES}
    if not known.any():
        return QualityFlags(flags, thresholds)

    def column(name: str) -> np.ndarray:
        return measures[:, _COLUMN[name]]

    def below_share_of_median(values: np.ndarray, ratio: float) -> tuple[np.ndarray, float]:
        threshold = ratio * float(np.median(values[known]))
        return known & (values < threshold), threshold

    headroom = 1.0 - column("brightness_p05")
    rules_by_name = {
        "dark": (column("brightness_p99"), rules.dark_ratio),
        "bright": (headroom, rules.bright_ratio),
        "blurry": (column("sharpness"), rules.blurry_ratio),
        "low_information": (column("entropy"), rules.low_information_ratio),
    }
    for name, (values, ratio) in rules_by_name.items():
        flagged, threshold = below_share_of_median(values, ratio)
        flags[:, QUALITY_ISSUES.index(name)] = flagged
        thresholds[name] = threshold if name != "bright" else 1.0 - threshold  # as a brightness_p05 level

    colourfulness = column("colourfulness")
    if np.mean(colourfulness[known] > rules.colourful) >= rules.colour_share:
        flags[:, QUALITY_ISSUES.index("grayscale")] = known & (colourfulness < rules.grayscale_colourfulness)
        thresholds["grayscale"] = rules.grayscale_colourfulness

    width, height = column("width"), column("height")
    with np.errstate(divide="ignore", invalid="ignore"):
        log_aspect = np.log(width / height)
        log_side = 0.5 * np.log(width * height)
    valid = known & np.isfinite(log_aspect) & np.isfinite(log_side)
    if valid.any():
        median_aspect = float(np.median(log_aspect[valid]))
        flags[:, QUALITY_ISSUES.index("odd_aspect")] = valid & (
            np.abs(log_aspect - median_aspect) > np.log(rules.aspect_factor))
        thresholds["odd_aspect"] = float(np.exp(median_aspect))
        median_side = float(np.median(log_side[valid]))
        small = log_side < median_side - np.log(rules.small_factor)
        large = log_side > median_side + np.log(rules.large_factor)
        flags[:, QUALITY_ISSUES.index("odd_size")] = valid & (small | large)
        thresholds["odd_size"] = float(np.exp(median_side)) / rules.small_factor
    return QualityFlags(flags, thresholds)
