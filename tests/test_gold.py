"""Trusted labels (read_trusted), GLC's corruption estimate (glc_corruption) and the GLC training method."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from labelaudit.core.calibration import softmax
from labelaudit.core.transition import glc_transition, realised_transition
from labelaudit.data.dataset import LabelledImages
from labelaudit.errors import LabelAuditError
from labelaudit.gold import glc_corruption, read_trusted
from labelaudit.methods.base import Batch
from labelaudit.methods.glc import GoldLossCorrection, corrected_loss
from labelaudit.methods.registry import create_method
from labelaudit.train.loop import TrainConfig

from tiny import TINY_MODEL, TINY_SIZE

CLASSES = ["cat", "dog", "fox"]


def fake_data(root, n: int = 12, *, skipped: tuple[int, ...] = ()) -> LabelledImages:
    """``n`` rows img_0.png … (empty files: matching needs files, not pixels); rows in ``skipped``
    are not audited. Given labels cycle through CLASSES."""
    images_root = root / "images"
    images_root.mkdir(parents=True, exist_ok=True)
    paths = [f"img_{i}.png" for i in range(n)]
    for path in paths:
        (images_root / path).write_bytes(b"")
    given = [CLASSES[i % 3] for i in range(n)]
    status = ["missing_file" if i in skipped else "audited" for i in range(n)]
    rows = pd.DataFrame({"path": paths, "given_label": given, "status": status}, dtype=str)
    row_index = np.array([i for i in range(n) if i not in skipped], np.int64)
    labels = np.array([i % 3 for i in row_index], np.int64)
    images = np.zeros((len(row_index), 4, 4, 3), np.uint8)
    return LabelledImages(rows=rows, classes=CLASSES, images=images, labels=labels, row_index=row_index,
                          images_root=images_root.resolve())


def write_csv(path, rows: list[tuple[str, str]], header: str = "path,label") -> None:
    path.write_text(header + "\n" + "".join(f"{p},{label}\n" for p, label in rows), encoding="utf-8")


# --------------------------------------------------------------------------- read_trusted


def test_read_trusted_matches_paths_and_lists_ignored_ones(tmp_path):
    data = fake_data(tmp_path, skipped=(4,))  # audited rows: 0,1,2,3,5,... -> positions shift after 4
    gold = tmp_path / "gold.csv"
    write_csv(gold, [("img_0.png", "cat"), ("./img_1.png", "cat"), ("img_5.png", " fox "),
                     ("nowhere.png", "dog"), ("img_4.png", "dog"), ("../outside.png", "cat")])
    trusted = read_trusted(gold, data)

    expected_mask = np.zeros(11, bool)
    expected_mask[[0, 1, 4]] = True  # img_5 is audited position 4 because img_4 was skipped
    np.testing.assert_array_equal(trusted.mask, expected_mask)
    np.testing.assert_array_equal(trusted.labels[trusted.mask], [0, 0, 2])
    assert (trusted.labels[~trusted.mask] == -1).all()
    # Not audited (missing, skipped by the scan, outside the folder): listed and counted, in CSV order.
    assert trusted.ignored_paths == ["nowhere.png", "img_4.png", "../outside.png"]
    assert trusted.n_trusted == 3
    assert len(trusted.csv_sha256) == 64


def test_read_trusted_refuses_labels_that_are_not_classes_and_names_them(tmp_path):
    data = fake_data(tmp_path)
    gold = tmp_path / "gold.csv"
    write_csv(gold, [("img_0.png", "cat"), ("img_1.png", "wolf"), ("img_2.png", "Cat"), ("img_3.png", "wolf")])
    with pytest.raises(LabelAuditError) as error:
        read_trusted(gold, data)
    message = str(error.value)
    assert "'wolf' (2 rows)" in message and "'Cat'" in message
    assert "classes are cat, dog, fox" in message


@pytest.mark.parametrize("content, expected", [
    ("", "is empty"),
    ("path,label\n", "no data rows"),
    ("file,label\nimg_0.png,cat\n", "no column 'path'"),
])
def test_read_trusted_refuses_empty_or_malformed_csv(tmp_path, content, expected):
    data = fake_data(tmp_path)
    gold = tmp_path / "gold.csv"
    gold.write_text(content, encoding="utf-8")
    with pytest.raises(LabelAuditError, match=expected) as error:
        read_trusted(gold, data)
    assert str(error.value).startswith("trusted labels:")


def test_read_trusted_refuses_two_labels_for_one_image_and_a_csv_matching_nothing(tmp_path):
    data = fake_data(tmp_path)
    gold = tmp_path / "gold.csv"
    write_csv(gold, [("img_0.png", "cat"), ("./img_0.png", "dog")])
    with pytest.raises(LabelAuditError, match="two labels: 'cat' and 'dog'"):
        read_trusted(gold, data)
    write_csv(gold, [("img_0.png", "cat"), ("img_0.png", "cat")])  # repeated, agreeing: fine
    assert read_trusted(gold, data).n_trusted == 1
    write_csv(gold, [("a.png", "cat"), ("b.png", "dog")])
    with pytest.raises(LabelAuditError, match="none of the 2 rows"):
        read_trusted(gold, data)


def test_read_trusted_uses_the_given_columns_and_delimiter(tmp_path):
    data = fake_data(tmp_path)
    gold = tmp_path / "gold.csv"
    gold.write_text("file;truth\nimg_2.png;dog\n", encoding="utf-8")
    trusted = read_trusted(gold, data, path_column="file", label_column="truth", delimiter=";")
    assert trusted.mask.sum() == 1 and trusted.labels[2] == 1


# --------------------------------------------------------------------------- GLC from a noisy-trained model


def knn_probabilities(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, n_classes: int,
                      *, neighbours: int = 50) -> np.ndarray:
    """(Q, K) label frequencies among each query's nearest training points: a model of P(label | x)
    fitted to whatever labels it is given (here noisy or clean)."""
    distances = ((query_x[:, None, :] - train_x[None, :, :]) ** 2).sum(axis=2)
    nearest = np.argpartition(distances, neighbours, axis=1)[:, :neighbours]
    return np.eye(n_classes)[train_y[nearest]].mean(axis=1)


@pytest.mark.parametrize("seed", [0, 1])
def test_glc_recovers_planted_pair_noise_from_a_model_trained_on_noisy_labels(seed):
    """Steps 1–2 of GLC with a real learner: 4 well-separated Gaussian classes in 2-D, 40% of class 0
    relabelled 1 and 30% of class 2 relabelled 3. A k-NN model of the noisy labels of the untrusted rows,
    averaged over 5% trusted rows per true class, recovers the realised T within 0.06 per cell; the same
    model of the clean labels (what ELR aims for) averages to nearly the identity and misses the noise."""
    rng = np.random.default_rng(seed)
    k, n = 4, 6000
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    true = rng.integers(0, k, n)
    features = centres[true] + rng.normal(0.0, 0.7, (n, 2))
    noisy = true.copy()
    flip = rng.random(n)
    noisy[(true == 0) & (flip < 0.4)] = 1
    noisy[(true == 2) & (flip < 0.3)] = 3
    realised = realised_transition(true, noisy, n_classes=k)
    trusted = rng.random(n) < 0.05

    noisy_probs = knn_probabilities(features[~trusted], noisy[~trusted], features[trusted], k)
    estimate, missing = glc_transition(true[trusted], noisy_probs, n_classes=k)
    assert not missing.any()
    assert np.abs(estimate - realised).max() < 0.06
    assert abs(estimate[0, 1] - 0.4) < 0.06 and abs(estimate[2, 3] - 0.3) < 0.06

    clean_probs = knn_probabilities(features[~trusted], true[~trusted], features[trusted], k)
    clean_estimate, _ = glc_transition(true[trusted], clean_probs, n_classes=k)
    assert clean_estimate[0, 1] < 0.05 and clean_estimate[2, 3] < 0.05  # the noise is invisible to it


# --------------------------------------------------------------------------- the GLC training method


class Passthrough(torch.nn.Module):
    """Returns its input as logits, so a test controls the logits exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_glc_loss_on_a_hand_made_batch_equals_the_formula():
    corruption = np.array([[0.7, 0.3, 0.0], [0.1, 0.8, 0.1], [0.0, 0.2, 0.8]])
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [-0.5, 0.3, 1.5], [1.0, 1.0, -2.0]])
    labels = np.array([0, 2, 1, 1])
    trusted = np.array([True, False, False, True])
    p = softmax(logits, axis=1)
    expected = np.mean([
        -np.log(p[0, 0]),                  # trusted: CE on the expert label
        -np.log(p[1] @ corruption[:, 2]),  # untrusted: −log((Ĉᵀp)_ỹ)
        -np.log(p[2] @ corruption[:, 1]),
        -np.log(p[3, 1]),
    ])

    method = GoldLossCorrection(corruption=corruption)
    method.build_networks(Passthrough, 3)
    batch = Batch(images=torch.tensor(logits, dtype=torch.float32), labels=torch.tensor(labels),
                  indices=torch.arange(4), trusted=torch.tensor(trusted))
    assert method.loss(batch, 0.0).item() == pytest.approx(expected, rel=1e-5)
    direct = corrected_loss(batch.images, batch.labels, batch.trusted, torch.tensor(corruption))
    assert direct.item() == pytest.approx(expected, rel=1e-5)
    # With Ĉ = identity, the untrusted term is plain cross-entropy too.
    identity = corrected_loss(batch.images, batch.labels, batch.trusted, torch.eye(3))
    assert identity.item() == pytest.approx(float(np.mean(-np.log(p[np.arange(4), labels]))), rel=1e-5)


def test_glc_loss_stays_finite_when_c_rules_out_a_given_label():
    corruption = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = corrected_loss(torch.tensor([[5.0, -5.0]]), torch.tensor([1]), torch.tensor([False]), corruption)
    assert torch.isfinite(loss)


def test_glc_refuses_a_bad_corruption_matrix_and_one_of_the_wrong_size():
    with pytest.raises(LabelAuditError, match="sum to 1"):
        create_method("glc", corruption=[[0.5, 0.2], [0.0, 1.0]])
    method = create_method("glc", corruption=np.eye(3))
    with pytest.raises(LabelAuditError, match="3×3 but the model has 2 classes"):
        method.build_networks(Passthrough, 2)


def test_glc_model_saves_and_loads_its_corruption_matrix(tmp_path):
    from labelaudit.train.checkpoint import load_model, save_model
    from labelaudit.train.loop import create_network

    corruption = np.array([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.25, 0.25, 0.5]])
    config = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, device="cpu")
    method = create_method("glc", corruption=corruption)
    method.build_networks(lambda: create_network(config, 3), 3)
    save_model(tmp_path / "model", method, config, CLASSES)

    loaded = load_model(tmp_path / "model")
    np.testing.assert_allclose(loaded.method.corruption_matrix().numpy(), corruption, atol=1e-6)
    probs = loaded.predict_proba(np.zeros((2, TINY_SIZE, TINY_SIZE, 3), np.uint8))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- glc_corruption


def test_glc_corruption_trains_on_untrusted_rows_saves_the_model_and_reuses_it(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = fake_data(tmp_path, n=48)
    data.images = rng.integers(0, 255, (48, TINY_SIZE, TINY_SIZE, 3), dtype=np.uint8)
    gold = tmp_path / "gold.csv"
    # Trusted rows of cat and dog only: fox gets an identity row.
    write_csv(gold, [(f"img_{i}.png", CLASSES[i % 2]) for i in range(0, 12)])
    trusted = read_trusted(gold, data)
    config = TrainConfig(model=TINY_MODEL, image_size=TINY_SIZE, epochs=1, batch_size=16, device="cpu")

    import labelaudit.train.loop as loop

    seen_rows = []
    real_fit = loop.fit

    def recording_fit(method, images, labels, *args, **kwargs):
        seen_rows.append(len(labels))
        return real_fit(method, images, labels, *args, **kwargs)

    monkeypatch.setattr(loop, "fit", recording_fit)
    out = tmp_path / "run"
    estimate = glc_corruption(data, trusted, config, out)
    assert seen_rows == [48 - 12]  # trained on the untrusted rows only
    assert estimate.matrix.shape == (3, 3)
    np.testing.assert_allclose(estimate.matrix.sum(axis=1), 1.0)
    np.testing.assert_array_equal(estimate.missing, [False, False, True])
    np.testing.assert_array_equal(estimate.matrix[2], [0.0, 0.0, 1.0])
    assert estimate.ce_model_dir == out / "glc" / "ce_model"
    assert (estimate.ce_model_dir / "model.safetensors").is_file()
    recorded = json.loads((out / "glc" / "estimate.json").read_text())
    assert recorded["trusted_sha256"] == trusted.csv_sha256 and recorded["n_trusted"] == 12
    assert recorded["classes_without_trusted_examples"] == ["fox"]

    again = glc_corruption(data, trusted, config, out)
    assert seen_rows == [36]  # same trusted CSV and settings: the saved model is reused
    np.testing.assert_allclose(again.matrix, estimate.matrix, atol=1e-6)

    glc_corruption(data, trusted, TrainConfig(**{**config.to_dict(), "lr": 0.01}), out)
    assert seen_rows == [36, 36]  # other settings: trained again


def test_glc_corruption_needs_untrusted_rows(tmp_path):
    data = fake_data(tmp_path, n=6)
    gold = tmp_path / "gold.csv"
    write_csv(gold, [(f"img_{i}.png", CLASSES[i % 3]) for i in range(6)])
    with pytest.raises(LabelAuditError, match="needs untrusted rows"):
        glc_corruption(data, read_trusted(gold, data), TrainConfig(device="cpu"), tmp_path / "run")
