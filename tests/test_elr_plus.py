"""ELR+ sized to the run: no mixup unless asked for, and a weight average spanning the same share of an
epoch as the official 0.997 does on CIFAR, whatever the number of steps per epoch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from labelaudit.methods.base import Batch
from labelaudit.methods.elr_plus import EMA_EPOCHS, ELRPlus, ema_decay_for
from labelaudit.methods.elr import ASYMMETRIC_SETTING, SYMMETRIC_SETTING
from labelaudit.train.loop import TrainConfig

from test_elr import probe_context


def _linear() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))


def _prepared(n_samples: int, batch_size: int, **options) -> ELRPlus:
    method = ELRPlus(**options)
    ctx = SimpleNamespace(n_samples=n_samples, n_classes=3, device="cpu", create_network=_linear, epochs=13,
                          config=TrainConfig(batch_size=batch_size, device="cpu"))
    method.prepare(ctx)
    return method


def test_automatic_ema_decay_spans_the_official_share_of_an_epoch():
    # The official 0.997 at CIFAR-10's 391 steps per epoch (50,000 images, batch 128) ...
    assert ema_decay_for(391) == pytest.approx(0.997, abs=1e-5)
    # ... and 2,000 rows at batch 32 (62 steps per epoch) average over as many epochs, not 5 of 13.
    method = _prepared(2000, 32)
    assert method.ema_decay == pytest.approx(1 - 1 / (EMA_EPOCHS * 62))
    assert 1 / (1 - method.ema_decay) == pytest.approx(EMA_EPOCHS * 62)
    assert _prepared(2000, 32, ema_decay=0.997).ema_decay == 0.997  # a given decay is kept
    restored = ELRPlus()
    restored.build_networks(_linear, 3)
    restored.load_state_dict(method.state_dict())  # resuming keeps the decay chosen in prepare
    assert restored.ema_decay == pytest.approx(method.ema_decay)


def test_default_elr_plus_trains_on_the_unmixed_batch():
    method = _prepared(5, 4)
    images = torch.randn(4, 3, 2, 2)
    labels = torch.tensor([0, 2, 1, 1])
    batch = Batch(images=images, labels=labels, indices=torch.tensor([0, 2, 3, 4]),
                  trusted=torch.zeros(4, dtype=torch.bool))
    torch.manual_seed(0)
    loss = method.loss(batch, 1.0)
    expected = 0.0
    with torch.no_grad():
        for k in (0, 1):
            logits = method.network(k)(images)  # no mixing of inputs, labels or targets
            p = F.softmax(logits, dim=1).clamp(1e-4, 1 - 1e-4)
            targets = method.targets[k][batch.indices]
            expected += F.cross_entropy(logits, labels) + method.lam * torch.log(1 - (targets * p).sum(dim=1)).mean()
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    assert method.settings()["mixup_alpha"] == 0.0


@pytest.mark.parametrize("kind, setting", [("symmetric", SYMMETRIC_SETTING), ("pairs", ASYMMETRIC_SETTING)])
def test_elr_plus_probes_the_noise_like_elr_and_takes_the_official_setting_for_it(kind, setting):
    """The official ELR+ configs use (0.7, 3) for symmetric and (0.9, 1) for asymmetric CIFAR-10 noise;
    keeping the symmetric one on look-alike noise cost 3 points on Fashion-MNIST."""
    method = _prepared(600, 32)
    assert method.probe_epoch == 3 and (method.beta, method.lam) == SYMMETRIC_SETTING  # 20% of 13 epochs
    ctx = probe_context(kind)
    method.on_epoch_end(3, ctx)
    assert (method.beta, method.lam) == setting
    assert _prepared(600, 32, beta=0.7, lam=3.0).probe_epoch is None  # both given: no probe
