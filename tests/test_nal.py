"""The noise adaptation layer as the paper and its code run it: the base network learns with cross-entropy
before it memorises the noisy labels, the channel starts from that base's confusion, and on planted noise
the learned channel θ approaches the true T while the base softmax predicts."""

from __future__ import annotations

import numpy as np
import pytest

from labelaudit.core.transition import realised_transition
from labelaudit.errors import LabelAuditError
from labelaudit.methods.nal import NoiseAdaptationLayer, channel_init
from labelaudit.methods.registry import create_method
from labelaudit.train.loop import TrainConfig, fit, predict_proba

from tiny import COLOURS, TINY_MODEL, TINY_SIZE

N_CLASSES = len(COLOURS)


def colour_images(n_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 16, 16, 3) uint8 single-colour images with pixel noise, and their true classes (N,)."""
    rng = np.random.default_rng(seed)
    true = np.arange(n_images) % N_CLASSES
    colours = np.asarray(list(COLOURS.values()), dtype=float)
    pixels = colours[true][:, None, None, :] + rng.normal(0.0, 25.0, (n_images, TINY_SIZE, TINY_SIZE, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8), true


def plant(true: np.ndarray, flips: dict[int, tuple[int, float]], seed: int) -> np.ndarray:
    """Rows of class i become class j with probability p, for each i: (j, p) in ``flips``."""
    rng = np.random.default_rng(seed)
    noisy = true.copy()
    for source, (target, rate) in flips.items():
        rows = np.flatnonzero(true == source)
        chosen = rng.choice(rows, size=int(round(rate * len(rows))), replace=False)
        noisy[chosen] = target
    return noisy


def config(epochs: int) -> TrainConfig:
    return TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, epochs=epochs, batch_size=32, lr=0.05, device="cpu")


def test_channel_starts_from_the_confusion_of_the_base_partway_through_the_same_run():
    """The base trains with plain cross-entropy for base_share of the epochs — on the run's own schedule,
    while the learning rate is still high — and the channel starts from *that* model's confusion, not from
    a model trained to the end (which has memorised the noisy labels, so its confusion says 'no noise')."""
    images, true = colour_images(96, seed=1)
    noisy = plant(true, {0: (1, 0.4), 1: (2, 0.4)}, seed=2)
    settings = config(epochs=4)
    captured = {}

    def after_epoch(epoch, method):
        if epoch == 2:
            captured["predicted"] = predict_proba(method, images, settings).argmax(axis=1)
        return {}

    fit(create_method("ce"), images, noisy, N_CLASSES, settings, on_epoch=after_epoch)
    nal = NoiseAdaptationLayer(base_share=0.5)
    result = fit(nal, images, noisy, N_CLASSES, settings)
    assert nal.switch_epoch == 2 and nal.channel_active
    # The first two epochs are the same cross-entropy training as the plain CE run (same seed, same batches).
    assert np.allclose(nal.initial_channel, channel_init(captured["predicted"], noisy, N_CLASSES))
    assert len(result.history) == 4  # one run: the channel epochs come after, not on top of, the base epochs


def test_learned_channel_approaches_the_planted_transition_and_the_base_predicts_the_true_class():
    images, true = colour_images(240, seed=3)
    noisy = plant(true, {0: (1, 0.4), 1: (2, 0.2)}, seed=4)
    truth = realised_transition(true, noisy, n_classes=N_CLASSES)
    # 240 tiny images are learned in a few epochs and memorised soon after: switch at half the run here.
    nal = NoiseAdaptationLayer(base_share=0.5)
    fit(nal, images, noisy, N_CLASSES, config(epochs=8))
    theta = nal.transition()
    assert np.allclose(theta.sum(axis=1), 1.0)
    assert np.mean(np.abs(theta - truth)) < 0.05
    assert np.mean(np.abs(theta - truth)) < 0.5 * np.mean(np.abs(np.eye(N_CLASSES) - truth))
    # Prediction is the base softmax: it recovers the true class, not the noisy label the channel explains.
    predicted = predict_proba(nal, images, config(epochs=8)).argmax(axis=1)
    assert np.mean(predicted == true) > 0.95


def test_switch_state_survives_a_checkpoint_round_trip():
    images, true = colour_images(64, seed=5)
    nal = NoiseAdaptationLayer(base_share=0.5)
    fit(nal, images, true, N_CLASSES, config(epochs=2))
    state = nal.state_dict()
    restored = NoiseAdaptationLayer(base_share=0.5)
    restored.build_networks(_network, N_CLASSES)
    restored.load_state_dict(state)
    assert restored.channel_active and restored.switch_epoch == 1
    assert np.allclose(restored.initial_channel, nal.initial_channel)
    assert np.allclose(restored.transition(), nal.transition())


def _network():
    from labelaudit.train.loop import create_network

    return create_network(config(epochs=1), N_CLASSES)


@pytest.mark.parametrize("share", [0.0, 1.0, 1.5])
def test_base_share_must_leave_room_for_both_phases(share):
    with pytest.raises(LabelAuditError, match="base_share"):
        NoiseAdaptationLayer(base_share=share)
