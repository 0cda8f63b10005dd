"""ELR loss and target update against values computed by hand (DESIGN.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from labelaudit.methods.elr import concentration_threshold, elr_loss, noise_concentration


def test_elr_loss_and_target_update_match_hand_computation():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]], requires_grad=True)
    labels = torch.tensor([0, 1])
    targets = torch.tensor([[0.5, 0.25, 0.25], [0.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    indices = torch.tensor([0, 1])
    beta, lam = 0.7, 3.0

    loss = elr_loss(logits, labels, targets, indices, beta=beta, lam=lam)

    # By hand: p = softmax, clamped to [1e-4, 1 - 1e-4]; t <- β t + (1 − β) p / Σp.
    e = math.e
    p0 = [e**2 / (e**2 + 2), 1 / (e**2 + 2), 1 / (e**2 + 2)]
    z1 = 1 + e + e**3
    p1 = [1 / z1, e / z1, e**3 / z1]
    t0 = [0.7 * old + 0.3 * new for old, new in zip([0.5, 0.25, 0.25], p0)]
    t1 = [0.3 * new for new in p1]
    ce = (-math.log(p0[0]) - math.log(p1[1])) / 2
    reg = (math.log(1 - sum(a * b for a, b in zip(t0, p0))) + math.log(1 - sum(a * b for a, b in zip(t1, p1)))) / 2
    assert loss.item() == pytest.approx(ce + lam * reg, rel=1e-5)
    assert targets[0].tolist() == pytest.approx(t0, rel=1e-5)
    assert targets[1].tolist() == pytest.approx(t1, rel=1e-5)
    assert targets[2].tolist() == pytest.approx([1 / 3] * 3)  # rows outside the batch untouched

    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_elr_probabilities_are_clamped():
    # A near-one-hot prediction would make log(1 − ⟨t, p⟩) infinite without the clamp.
    logits = torch.tensor([[60.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0]])
    loss = elr_loss(logits, torch.tensor([0]), targets, torch.tensor([0]), beta=0.0, lam=1.0)
    assert torch.isfinite(loss)
    clamped = [1 - 1e-4, 1e-4]
    inner = sum(c * c for c in clamped)  # t equals the clamped p when β = 0
    assert loss.item() == pytest.approx(math.log(1 - inner), rel=1e-3)  # cross-entropy is ~0 here


def test_noise_concentration_tells_pairs_from_symmetric_noise():
    k = 6
    symmetric = np.full((k, k), 0.3 / (k - 1)) + np.eye(k) * (0.7 - 0.3 / (k - 1))
    pairs = np.eye(k) * 0.6
    for i in range(k):
        pairs[i, (i + 1) % k] = 0.4
    assert noise_concentration(symmetric) == pytest.approx(1 / (k - 1))
    assert noise_concentration(pairs) == pytest.approx(1.0)
    assert noise_concentration(np.eye(k)) == 0.0


def test_threshold_separates_noise_blurred_by_an_early_model():
    """An early model confuses each class with a look-alike, which concentrates even symmetric noise:
    with 8 classes, 20% symmetric noise must still read as symmetric and 40% pairs noise as not."""
    k = 8
    rows = np.arange(k)
    model_confusion = np.eye(k) * 0.94
    model_confusion[rows, (rows + 3) % k] += 0.06  # each class looks like one other class
    symmetric = np.full((k, k), 0.2 / (k - 1)) + np.eye(k) * (0.8 - 0.2 / (k - 1))
    pairs = np.eye(k) * 0.6
    pairs[rows, (rows + 1) % k] += 0.4
    threshold = concentration_threshold(k)
    blurred_symmetric = noise_concentration(model_confusion @ symmetric)
    blurred_pairs = noise_concentration(model_confusion @ pairs)
    assert 1 / (k - 1) < blurred_symmetric < threshold < blurred_pairs
