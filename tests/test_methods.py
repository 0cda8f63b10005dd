"""ELR+, forward correction and the noise adaptation layer: losses against hand computation, the ELR+
pieces (ramp, mixup, EMA, peer targets), and every method's train → save → load round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from labelaudit.core.transition import anchor_transition
from labelaudit.data.dataset import load_labelled_images
from labelaudit.errors import LabelAuditError
from labelaudit.methods.base import Batch
from labelaudit.methods.elr_plus import (
    ELRPlus, elr_plus_loss, ema_update, mix, sample_mixup, sigmoid_ramp, update_targets,
)
from labelaudit.methods.forward import forward_corrected_loss
from labelaudit.methods.nal import LOG_FLOOR, NoiseAdaptationLayer, NoiseChannel, channel_init
from labelaudit.methods.registry import create_method, method_names
from labelaudit.train.checkpoint import load_model, save_model
from labelaudit.train.loop import TrainConfig, fit, predict_proba

from tiny import TINY_MODEL, TINY_SIZE


def softmax_rows(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- ELR+ pieces

def test_sigmoid_ramp_values():
    assert sigmoid_ramp(0.0, 0.0) == 1.0 and sigmoid_ramp(0.3, 0.0) == 1.0  # no ramp: w = 1 throughout
    assert sigmoid_ramp(0.0, 0.5) == pytest.approx(math.exp(-5.0))
    assert sigmoid_ramp(0.25, 0.5) == pytest.approx(math.exp(-5.0 * 0.5**2))
    assert sigmoid_ramp(0.4, 0.5) == pytest.approx(math.exp(-5.0 * 0.2**2))
    assert sigmoid_ramp(0.5, 0.5) == 1.0 and sigmoid_ramp(0.9, 0.5) == 1.0


def test_mixup_weight_is_folded_to_at_least_half_and_permutes_the_batch():
    torch.manual_seed(0)
    draws = [sample_mixup(6, 1.0) for _ in range(2000)]
    weights = np.array([lam for lam, _ in draws])
    assert weights.min() >= 0.5 and weights.max() <= 1.0
    # Beta(1, 1) is uniform on [0, 1]; folded, uniform on [0.5, 1] with mean 0.75.
    assert weights.mean() == pytest.approx(0.75, abs=0.02)
    assert all(sorted(perm.tolist()) == list(range(6)) for _, perm in draws[:50])
    lam, perm = sample_mixup(4, 0.0)
    assert lam == 1.0 and perm.tolist() == [0, 1, 2, 3]


def test_mix_combines_each_row_with_its_partner():
    values = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    mixed = mix(values, 0.7, torch.tensor([2, 0, 1]))
    expected = [[0.7 * 1 + 0.3 * 2, 0.3 * 2], [0.3 * 1, 0.7 * 1], [0.7 * 2, 0.7 * 2 + 0.3 * 1]]
    assert np.allclose(mixed.numpy(), expected)


def test_elr_plus_loss_matches_hand_computation():
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    soft_labels = torch.tensor([[0.7, 0.3, 0.0], [0.0, 0.4, 0.6]])
    targets = torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    loss = elr_plus_loss(logits, soft_labels, targets, lam=3.0, weight=0.5)

    e = math.e
    p = [[e / (e + e**2 + 1), e**2 / (e + e**2 + 1), 1 / (e + e**2 + 1)],
         [1 / (2 + e**3), 1 / (2 + e**3), e**3 / (2 + e**3)]]
    soft_ce = -sum(y * math.log(pi) for row_y, row_p in zip(soft_labels.tolist(), p) for y, pi in zip(row_y, row_p)) / 2
    reg = sum(math.log(1 - sum(t * pi for t, pi in zip(row_t, row_p))) for row_t, row_p in zip(targets.tolist(), p)) / 2
    assert loss.item() == pytest.approx(soft_ce + 0.5 * 3.0 * reg, rel=1e-5)


def test_target_update_is_a_running_average_of_the_teacher():
    targets = torch.tensor([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0]])
    update_targets(targets, torch.tensor([0, 2]), torch.tensor([[0.2, 0.8], [0.6, 0.4]]), beta=0.7)
    assert np.allclose(targets.numpy(), [[0.7 * 0.5 + 0.3 * 0.2, 0.7 * 0.5 + 0.3 * 0.8], [1.0, 0.0],
                                         [0.3 * 0.6, 0.7 + 0.3 * 0.4]])


def test_ema_update_with_known_decay_averages_parameters_and_copies_buffers():
    torch.manual_seed(1)
    network = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    network[1].running_mean.fill_(0.25)
    before = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, network, 0.9)
    for old, new, raw in zip(before, ema.parameters(), network.parameters()):
        assert torch.allclose(new, 0.9 * old + 0.1 * raw)
    assert torch.equal(ema[1].running_mean, network[1].running_mean)


def _stub_elr_plus(**options) -> ELRPlus:
    """ELR+ on four linear 'networks' over (B, 3, 2, 2) inputs, 3 classes, 5 training rows."""
    method = ELRPlus(**options)
    torch.manual_seed(2)
    method.build_networks(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), 3)
    with torch.no_grad():  # make the two EMA copies differ from each other and from their networks
        for parameter in method.ema(0).parameters():
            parameter.add_(0.5)
        for parameter in method.ema(1).parameters():
            parameter.sub_(0.3)
    method.targets = [torch.zeros(5, 3), torch.zeros(5, 3)]
    return method


def test_elr_plus_networks_emas_and_trainable_parameters():
    method = _stub_elr_plus()
    assert len(method.networks()) == 4
    ema_ids = {id(p) for k in (0, 1) for p in method.ema(k).parameters()}
    assert all(not p.requires_grad for k in (0, 1) for p in method.ema(k).parameters())
    trainable = method.trainable_parameters()
    assert len(trainable) == 4 and not ema_ids & {id(p) for p in trainable}


def test_elr_plus_loss_uses_the_peer_ema_targets_mixed_like_the_inputs():
    method = _stub_elr_plus(coef_ramp=0.5, mixup_alpha=1.0)
    method.beta, method.lam = 0.7, 3.0
    images = torch.randn(4, 3, 2, 2)
    batch = Batch(images=images, labels=torch.tensor([0, 2, 1, 1]), indices=torch.tensor([0, 2, 3, 4]),
                  trusted=torch.zeros(4, dtype=torch.bool))
    progress = 0.1
    torch.manual_seed(7)
    loss = method.loss(batch, progress)

    torch.manual_seed(7)
    mixups = [sample_mixup(4, 1.0), sample_mixup(4, 1.0)]  # same draws, in the same order
    weight = math.exp(-5.0 * (1 - progress / 0.5) ** 2)
    one_hot = F.one_hot(batch.labels, 3).float()
    expected = 0.0
    with torch.no_grad():
        for k in (0, 1):
            teacher = F.softmax(method.ema(1 - k)(images), dim=1)  # the *other* network's EMA, un-mixed batch
            target_rows = 0.3 * teacher  # buffer started at zero
            assert torch.allclose(method.targets[k][batch.indices], target_rows, atol=1e-6)
            assert torch.equal(method.targets[k][1], torch.zeros(3))  # rows outside the batch untouched
            lam, perm = mixups[k]
            assert lam >= 0.5
            logits = method.network(k)(lam * images + (1 - lam) * images[perm])
            p = F.softmax(logits, dim=1).clamp(1e-4, 1 - 1e-4)
            labels_mixed = lam * one_hot + (1 - lam) * one_hot[perm]
            targets_mixed = lam * target_rows + (1 - lam) * target_rows[perm]
            soft_ce = -(labels_mixed * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            expected += soft_ce + weight * 3.0 * torch.log(1 - (targets_mixed * p).sum(dim=1)).mean()
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)


def test_elr_plus_after_step_applies_the_ramped_decay():
    method = _stub_elr_plus(ema_decay=0.99, ema_ramp=0.5)
    old = [p.detach().clone() for p in method.ema(1).parameters()]
    method.after_step(0.25)
    decay = 0.99 * math.exp(-5.0 * 0.5**2)
    for before, after, raw in zip(old, method.ema(1).parameters(), method.network(1).parameters()):
        assert torch.allclose(after, decay * before + (1 - decay) * raw)


def test_elr_plus_predicts_the_average_softmax_of_the_raw_networks():
    method = _stub_elr_plus()
    images = torch.randn(3, 3, 2, 2)
    with torch.no_grad():
        expected = (F.softmax(method.network(0)(images), 1) + F.softmax(method.network(1)(images), 1)) / 2
        assert torch.allclose(method.predict_proba(images), expected.double(), atol=1e-6)
        assert torch.allclose(F.softmax(method.predict_logits(images), 1), expected.double(), atol=1e-6)


def test_elr_plus_refuses_out_of_range_options():
    with pytest.raises(LabelAuditError, match="elr\\+ option ema_decay must be in \\[0, 1\\), got 1"):
        ELRPlus(ema_decay=1.0)
    with pytest.raises(LabelAuditError, match="coef_ramp"):
        ELRPlus(coef_ramp=1.5)


# ----------------------------------------------------------------------------- forward correction, NAL

def test_forward_corrected_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 1.5]])
    labels = torch.tensor([1, 2])
    transition = torch.tensor([[0.8, 0.2, 0.0], [0.1, 0.7, 0.2], [0.0, 0.3, 0.7]])
    p = softmax_rows(logits.numpy().astype(np.float64))
    t = transition.numpy().astype(np.float64)
    expected = -np.mean([np.log(p[b] @ t[:, labels[b]]) for b in range(2)])
    assert forward_corrected_loss(logits, labels, transition).item() == pytest.approx(expected, rel=1e-5)
    # A label no true class can produce under T: large but finite, not inf.
    impossible = forward_corrected_loss(logits, labels, torch.eye(3))
    assert torch.isfinite(impossible)


def test_nal_channel_init_is_log_of_the_row_normalised_confusion():
    predicted = np.array([0, 0, 1, 2, 2, 2])
    noisy = np.array([0, 1, 1, 2, 2, 0])
    confusion = np.array([[0.5, 0.5, 0, 0], [0, 1, 0, 0], [1 / 3, 0, 2 / 3, 0], [0, 0, 0, 1]])  # class 3 never predicted
    assert np.allclose(channel_init(predicted, noisy, 4), np.log(confusion + 1e-8))
    assert LOG_FLOOR == 1e-8


def test_nal_loss_matches_hand_computation_and_predicts_with_the_base():
    torch.manual_seed(3)
    method = NoiseAdaptationLayer()
    method.build_networks(lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)), 3)
    with torch.no_grad():
        method.channel.b.copy_(torch.randn(3, 3))
    images = torch.randn(4, 3, 2, 2)
    labels = torch.tensor([0, 1, 2, 1])
    batch = Batch(images=images, labels=labels, indices=torch.arange(4), trusted=torch.zeros(4, dtype=torch.bool))
    with torch.no_grad():
        p = softmax_rows(method.nets[0](images).numpy().astype(np.float64))
        # Before the switch epoch the base trains with plain cross-entropy, then through the channel.
        assert method.loss(batch, 0.0).item() == pytest.approx(-np.mean(np.log(p[np.arange(4), labels])), rel=1e-5)
        method.channel_active = True
        theta = softmax_rows(method.channel.b.numpy().astype(np.float64))
        expected = -np.mean([np.log(p[n] @ theta[:, labels[n]]) for n in range(4)])
        assert method.loss(batch, 0.0).item() == pytest.approx(expected, rel=1e-5)
        assert np.allclose(method.transition(), theta, atol=1e-6)
        assert np.allclose(method.predict_proba(images).numpy(), p, atol=1e-6)


def test_nal_channel_is_trained_without_weight_decay():
    method = NoiseAdaptationLayer()
    method.build_networks(lambda: torch.nn.Linear(4, 3), 3)
    groups = method.trainable_parameters()
    channel_group = [g for g in groups if any(p is method.channel.b for p in g["params"])]
    assert len(channel_group) == 1 and channel_group[0]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(method.networks().parameters()))
    assert isinstance(method.channel, NoiseChannel)


# ----------------------------------------------------------------------------- train, save, load

CONFIG = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, epochs=1, batch_size=32, device="cpu")


@pytest.fixture(scope="module")
def tiny_arrays(tiny_dataset):
    data = load_labelled_images(tiny_dataset / "images", tiny_dataset / "labels.csv", image_size=TINY_SIZE)
    truth = load_labelled_images(tiny_dataset / "images", tiny_dataset / "truth.csv", image_size=TINY_SIZE,
                                 classes=data.classes)
    return data, truth.labels


@pytest.fixture(scope="module")
def trained(tiny_arrays):
    """One epoch of each method on the tiny data, trained on demand and kept for the module."""
    data, true_labels = tiny_arrays
    cache = {}

    def train(name: str):
        if name not in cache:
            labels, trusted = data.labels, None
            if name == "glc":  # every sixth row has an expert label
                trusted = np.arange(len(data.labels)) % 6 == 0
                labels = np.where(trusted, true_labels, data.labels)
            cache[name] = fit(create_method(name), data.images, labels, len(data.classes), CONFIG, trusted=trusted)
        return cache[name]

    return train


@pytest.mark.parametrize("name", ["ce", "elr", "elr+", "forward", "nal", "glc"])
def test_each_method_trains_saves_and_loads_with_the_same_predictions(name, trained, tiny_arrays, tmp_path):
    data, _ = tiny_arrays
    fitted = trained(name)
    assert len(fitted.history) == 1 and math.isfinite(fitted.history[0]["train_loss"])
    images = data.images[:20]
    before = predict_proba(fitted.method, images, CONFIG)
    save_model(tmp_path / "model", fitted.method, CONFIG, data.classes, metrics={"history": fitted.history})
    loaded = load_model(tmp_path / "model")
    assert loaded.info["method"] == name and loaded.classes == data.classes
    after = loaded.predict_proba(images)
    assert after.shape == (20, len(data.classes))
    assert np.allclose(after, before, atol=1e-5)
    saved = fitted.method.networks().state_dict()
    restored = loaded.method.networks().state_dict()
    assert set(saved) == set(restored)
    assert all(torch.equal(saved[key].cpu(), restored[key]) for key in saved)


def test_every_registered_method_is_covered():
    assert set(method_names()) == {"ce", "elr", "elr+", "forward", "nal", "glc"}


def test_forward_trains_with_the_anchor_estimate_of_a_ce_model(trained, tiny_arrays, tmp_path):
    data, _ = tiny_arrays
    forward = trained("forward").method
    # fit() reseeds, so the CE model forward trained first is the same as a CE model trained alone.
    ce_probs = predict_proba(trained("ce").method, data.images, CONFIG)
    expected = anchor_transition(ce_probs, percentile=97.0)
    assert np.allclose(forward.transition(), expected, atol=1e-6)
    save_model(tmp_path / "m", forward, CONFIG, data.classes)
    assert np.allclose(load_model(tmp_path / "m").method.transition(), expected, atol=1e-6)


def test_nal_starts_from_the_ce_confusion_and_saves_its_channel(trained, tiny_arrays, tmp_path):
    data, _ = tiny_arrays
    nal = trained("nal").method
    predicted = predict_proba(trained("ce").method, data.images, CONFIG).argmax(axis=1)
    assert np.allclose(nal.initial_channel, channel_init(predicted, data.labels, len(data.classes)))
    theta = nal.transition()
    assert theta.shape == (8, 8) and np.allclose(theta.sum(axis=1), 1.0)
    save_model(tmp_path / "m", nal, CONFIG, data.classes)
    assert np.allclose(load_model(tmp_path / "m").method.transition(), theta, atol=1e-7)
