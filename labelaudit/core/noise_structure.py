"""Is label noise symmetric or concentrated between look-alike classes? A test on confident-joint counts.

ELR's (β, λ) depends on the answer (Liu et al. 2020: β 0.7, λ 3 for symmetric noise; β 0.9, λ 1 for
class-dependent noise), and a user rarely knows it. :func:`noise_structure` reads it from counts of
(estimated true class, given label) pairs: ELR passes :func:`confident_counts` of an early model's
predictions (the confident joint before calibration, which would turn single rows into fractions).

The rule, per estimated true class (row) i with m_i off-diagonal ("noisy") counts:

1. **Share of the top cell**: s_i = largest off-diagonal count / m_i. Pair noise puts nearly all of a
   row's noise in one cell (s_i → 1); symmetric noise spreads it over the K−1 other classes.
2. **Compared with symmetric noise at the same counts**: e_i = E[max of Multinomial(m_i, K−1 equal
   cells)] / m_i, by seeded simulation. With few noisy rows the top cell takes a large share by chance
   alone (2 noisy rows among 9 other classes land in one cell 1 time in 9; e_i = 0.56 there, against
   1/9 for many rows), so a raw share misreads small or low-noise data as concentrated.
3. **Excess of the row**: x_i = (s_i − e_i) / (1 − e_i): 0 for symmetric noise, 1 when all of the row's
   noise goes to one class. Rows with fewer than 2 noisy counts cannot show concentration and are left
   out.
4. **Excess of the noise**: the interquartile mean of x_i over the rows (the mean of the middle half),
   so that a few classes dominated by the model's own confusion with a look-alike cannot decide for all
   of them.
5. **Decision**: concentrated when the excess is at least ``min_excess`` (0.35) *and* symmetric noise
   at these counts rarely concentrates as much: the summed top-cell counts exceed those of all but
   ``alpha`` (1%) of the simulated symmetric draws. K ≤ 2 is always symmetric (one other class).

The thresholds are set by measurement, on probe inputs captured from ELR training runs (default settings)
on Fashion-MNIST (10, 5 and 3 classes, 20–200 images per class): after 20% of the epochs symmetric noise at
5–50% gave an excess of 0.04–0.26 and pair noise at 20–50% 0.47–0.74 (after 40%: 0.13–0.33 and 0.60–0.74).
An early model's own confusion between look-alike classes adds concentrated counts that no count-based
rule can tell from pair noise; when it outweighs the label noise on a model that has barely learned the
classes, both land in between (the synthetic shapes at 16 px after 12 of 60 epochs: 0.30–0.35 for 5–10%
symmetric noise, 0.32 for 40% pairs), which is why ELR looks again later when a first look is not
conclusive (:func:`settled_early`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .transition import confident_counts  # noqa: F401  (the counts the probe reads; re-exported)

#: excess over symmetric noise (interquartile mean over classes) from which noise reads as concentrated
MIN_EXCESS = 0.35
#: one-sided significance level of the test against symmetric noise at the same counts
ALPHA = 0.01
#: symmetric-noise draws behind the expected top-cell shares and the p-value
N_DRAWS = 2000
#: an early look settles only an excess below the first (symmetric) or, significant, from the second on
EARLY_BAND = (0.25, 0.45)


@dataclass(frozen=True)
class NoiseStructure:
    """Outcome of :func:`noise_structure`.

    concentrated: the noise reads as class-dependent (concentrated on one other class per class);
    excess: interquartile mean over classes of the top cell's share beyond symmetric noise at the same
    counts, about 0 for symmetric noise and 1 for pure pairs; p_value: probability that symmetric noise
    at these counts puts at least as many counts in the rows' top cells; concentration / expected: the
    observed and the symmetric-noise share of the off-diagonal counts in the rows' top cells, pooled over
    rows with 2 or more; noisy_count: those rows' off-diagonal counts; reason: one line for the user.
    """

    concentrated: bool
    excess: float
    p_value: float
    concentration: float
    expected: float
    noisy_count: int
    reason: str


def noise_structure(joint, *, min_excess: float = MIN_EXCESS, alpha: float = ALPHA, n_draws: int = N_DRAWS,
                    seed: int = 0) -> NoiseStructure:
    """Decide whether the noise in ``joint`` is symmetric or concentrated on one other class per class.

    See the module docstring for the rule.

    Parameters
    ----------
    joint : array_like, shape (K, K)
        Non-negative counts ``joint[true, given]``; may be fractional (a calibrated confident joint): each
        row's off-diagonal total is rounded to whole rows for the symmetric-noise draws.
    min_excess : float
        In (0, 1]: the excess from which noise reads as concentrated.
    alpha : float
        In (0, 1): significance level of the one-sided test against symmetric noise.
    n_draws : int
        Symmetric-noise draws (multinomial, seeded by ``seed``).
    seed : int

    Returns
    -------
    NoiseStructure
    """
    joint = np.asarray(joint, dtype=np.float64)
    if joint.ndim != 2 or joint.shape[0] != joint.shape[1]:
        raise ValueError(f"joint must be a square (K, K) matrix, got shape {joint.shape}")
    if not np.all(np.isfinite(joint)) or (joint < 0).any():
        raise ValueError("joint must hold finite, non-negative counts")
    if not 0.0 < min_excess <= 1.0:
        raise ValueError(f"min_excess must be in (0, 1], got {min_excess}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}")
    n_classes = joint.shape[0]
    if n_classes <= 2:
        return NoiseStructure(False, 0.0, 1.0, 0.0, 0.0, 0, "two classes: all noise goes to the other one")
    off_diagonal = joint[~np.eye(n_classes, dtype=bool)].reshape(n_classes, n_classes - 1)
    row_mass = off_diagonal.sum(axis=1)
    counts = np.rint(row_mass).astype(np.int64)
    informative = counts >= 2
    if not informative.any():
        return NoiseStructure(False, 0.0, 1.0, 0.0, 0.0, 0, "too little noise to tell its structure")

    counts = counts[informative]
    top_share = off_diagonal[informative].max(axis=1) / row_mass[informative]
    draws = np.random.default_rng(seed).multinomial(counts, np.full(n_classes - 1, 1.0 / (n_classes - 1)),
                                                    size=(n_draws, len(counts)))
    null_top = draws.max(axis=2)  # (n_draws, informative rows)
    expected_share = null_top.mean(axis=0) / counts  # < 1, as counts >= 2
    row_excess = (top_share - expected_share) / (1.0 - expected_share)
    excess = interquartile_mean(row_excess)

    total = int(counts.sum())
    observed = float(np.dot(counts, top_share))  # top-cell counts, in whole rows
    pooled_null = null_top.sum(axis=1)
    # Ties count against concentration; 1e-9 absorbs float noise in the observed counts.
    p_value = float((1 + np.count_nonzero(pooled_null >= observed - 1e-9)) / (n_draws + 1))
    concentration, expected = observed / total, float(pooled_null.mean()) / total
    concentrated = excess >= min_excess and p_value <= alpha

    shares = (f"{concentration:.0%} of the noise goes to one other class per class, {expected:.0%} would "
              "under symmetric noise at these counts")
    p_text = f"p = {p_value:.3f}" if p_value >= 0.001 else "p < 0.001"
    if concentrated:
        reason = f"{shares} (excess {excess:.2f} ≥ {min_excess:g}, {p_text})"
    elif excess < min_excess:
        reason = f"{shares} (excess {excess:.2f} < {min_excess:g})"
    else:
        reason = f"{shares} (excess {excess:.2f}, but {p_text} > {alpha:g}: too few noisy rows to tell)"
    return NoiseStructure(concentrated, excess, p_value, concentration, expected, total, reason)


def settled_early(structure: NoiseStructure, *, band: tuple[float, float] = EARLY_BAND) -> bool:
    """Whether an early look at the noise is conclusive: an excess under ``band[0]`` (symmetric), or at
    least ``band[1]`` with the test against symmetric noise passed (concentrated).

    In between, an early model's own confusion between look-alike classes may be what concentrates the
    counts: with a model that has barely learned the classes (the synthetic shapes at 16 px after 12 of
    60 epochs, 40–47% right) 5–10% symmetric noise gave an excess of 0.30–0.35 and 40% pair noise 0.32;
    after 24 epochs (53–73% right) 0.17–0.23 and 0.81. Look again later, when the model knows the classes
    better.
    """
    low, high = band
    return structure.excess < low or (structure.excess >= high and structure.concentrated)



def interquartile_mean(values) -> float:
    """Mean of the middle half of ``values`` (N,): ⌊N/4⌋ dropped from each end (none when N < 4)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    cut = len(ordered) // 4
    return float(ordered[cut:len(ordered) - cut].mean())
