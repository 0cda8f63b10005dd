"""ELR loss and target update against values computed by hand (DESIGN.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from types import SimpleNamespace

from labelaudit.methods.elr import ASYMMETRIC_SETTING, ELR, SYMMETRIC_SETTING, elr_loss


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


def probe_context(kind: str, n_classes: int = 6, per_class: int = 100, rate: float = 0.3) -> SimpleNamespace:
    """What on_epoch_end needs from the training context: labels and the model's probabilities on them
    (an early model: right 90% of the time, unsure otherwise)."""
    rng = np.random.default_rng(0)
    true = np.repeat(np.arange(n_classes), per_class)
    labels = true.copy()
    flipped = rng.choice(len(true), int(rate * len(true)), replace=False)
    shift = rng.integers(1, n_classes, len(flipped)) if kind == "symmetric" else 1
    labels[flipped] = (true[flipped] + shift) % n_classes
    logits = rng.normal(0.0, 1.0, (len(true), n_classes))
    logits[np.arange(len(true)), true] += 3.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return SimpleNamespace(labels=labels, n_classes=n_classes, predict_train=lambda: probs)


@pytest.mark.parametrize("kind, setting", [("symmetric", SYMMETRIC_SETTING), ("pairs", ASYMMETRIC_SETTING)])
def test_probe_picks_the_setting_from_the_noise_structure(kind, setting):
    method = ELR()
    method.probe_epoch = 2
    ctx = probe_context(kind)
    method.on_epoch_end(1, ctx)  # not the probe epoch: nothing changes
    assert (method.beta, method.lam) == SYMMETRIC_SETTING and method.choice == "default"
    method.on_epoch_end(2, ctx)
    assert (method.beta, method.lam) == setting
    expected = "symmetric" if kind == "symmetric" else "class-dependent (asymmetric)"
    assert method.choice.startswith(f"auto: noise looks {expected} after epoch 2: ")
    assert "under symmetric noise at these counts" in method.choice and "excess" in method.choice


def test_probe_keeps_a_given_beta_or_lambda():
    method = ELR(beta=0.8)
    method.probe_epoch = 2
    method.on_epoch_end(2, probe_context("pairs"))
    assert (method.beta, method.lam) == (0.8, ASYMMETRIC_SETTING[1])


def test_an_inconclusive_first_look_keeps_the_symmetric_setting_and_looks_again():
    method = ELR()
    method.probe_epoch, method.reprobe_epoch = 2, 4
    unclear = probe_context("symmetric")
    probs = unclear.predict_train()
    # The early model's own confusion: 10 images labelled with each class look like its look-alike to it
    # (0↔1, 2↔3, 4↔5), on top of 30% symmetric noise; concentrated, but not clearly so.
    confused = probs.copy()
    for label in range(6):
        rows = np.flatnonzero(unclear.labels == label)[:10]
        confused[rows] = np.eye(6)[label ^ 1] * 0.9 + 0.1 / 6
    unclear.predict_train = lambda: confused
    from labelaudit.core.noise_structure import confident_counts, noise_structure, settled_early

    assert not settled_early(noise_structure(confident_counts(unclear.labels, confused)))
    method.on_epoch_end(2, unclear)
    assert (method.beta, method.lam) == SYMMETRIC_SETTING and method.probe_epoch == 4
    assert "unclear after epoch 2" in method.choice and "looking again at epoch 4" in method.choice
    method.on_epoch_end(4, probe_context("pairs"))  # the second look decides
    assert (method.beta, method.lam) == ASYMMETRIC_SETTING
    assert method.choice.startswith("auto: noise looks class-dependent (asymmetric) after epoch 4")
    assert method.state_dict()["reprobe_epoch"] == 4


def test_prepare_plans_the_second_look_only_when_epochs_remain():
    for epochs, probes in ((10, (2, 4)), (60, (12, 24)), (3, (1, None)), (1, (None, None))):
        ctx = SimpleNamespace(n_samples=4, n_classes=3, device="cpu", epochs=epochs,
                              create_network=lambda: torch.nn.Linear(2, 3))
        method = ELR()
        method.prepare(ctx)
        assert (method.probe_epoch, method.reprobe_epoch) == probes, epochs
