"""Fast mode (``scan --freeze-backbone``): cached embeddings, a linear ELR head, the usual report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from labelaudit import load_model
from labelaudit.cli.app import app
from labelaudit.core.metrics import average_precision
from labelaudit.train import embeddings as embeddings_module
from labelaudit.train.head import LinearHead, attach_head
from tiny import NAMES, TINY_MODEL, TINY_SIZE, write_colour_images, write_csv

runner = CliRunner()


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A randomly initialised test_resnet state dict saved locally (never downloaded)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(11)
    path = tmp_path_factory.mktemp("weights") / "test_resnet.safetensors"
    save_file(timm.create_model(TINY_MODEL).state_dict(), str(path))
    return path


@pytest.fixture(scope="module")
def colour_data(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """60 colour-coded images in 3 classes with 6 planted wrong labels, plus one row with a missing file.

    Returns the folder, labels.csv and the (61,) bool mask of planted errors in CSV order.
    """
    root = tmp_path_factory.mktemp("colours")
    rows = write_colour_images(root, 60, seed=4)
    planted = np.zeros(len(rows) + 1, bool)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(rows), size=6, replace=False):
        path, label = rows[i]
        rows[i] = (path, NAMES[(NAMES.index(label) + 1) % len(NAMES)])
        planted[i] = True
    rows.append(("no_such_file.png", "red"))
    return root / "images", write_csv(root / "labels.csv", rows), planted


def scan(images: Path, labels: Path, out: Path, *extra: str, epochs: int = 20):
    return runner.invoke(app, ["scan", str(images), str(labels), "-o", str(out), "--freeze-backbone",
                               "--model", TINY_MODEL, "--image-size", str(TINY_SIZE), "--epochs", str(epochs),
                               "--device", "cpu", "--json", *extra])


def summary_of(result) -> dict:
    assert result.exit_code == 0, result.output + str(result.exception)
    return json.loads(result.stdout)


def test_scan_writes_the_report_and_a_model_that_predicts_like_the_head(colour_data, weights_file, tmp_path):
    images, labels, _ = colour_data
    out = tmp_path / "out"
    summary = summary_of(scan(images, labels, out, "--weights", str(weights_file)))

    assert summary["mode"] == "frozen backbone"
    assert summary["embeddings"]["status"] == "computed"
    assert summary["notes"] == []
    samples = pd.read_parquet(out / "samples.parquet")
    csv_rows = pd.read_csv(labels)
    assert samples["path"].tolist() == csv_rows["path"].tolist()
    assert samples["status"].tolist() == ["audited"] * 60 + ["missing_file"]
    assert samples["rank"].notna().sum() == 60
    for name in ("classes.parquet", "transition.parquet", "predictions.npz"):
        assert (out / name).is_file()

    # The saved model is the backbone with the head as its classifier: its probabilities are the
    # softmax of the head applied to the cached embeddings.
    from safetensors.torch import load_file

    features = np.load(summary["embeddings"]["file"])
    state = load_file(str(out / "model" / "model.safetensors"))
    logits = features @ state["0.fc.weight"].numpy().T + state["0.fc.bias"].numpy()
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    model = load_model(out / "model")
    audited = sorted(p.name for p in images.iterdir())
    predicted = model.predict_folder(images).set_index("path").loc[audited]
    position = {path: i for i, path in enumerate(csv_rows["path"][:60])}
    rows = [position[p] for p in audited]
    assert predicted["label"].tolist() == np.asarray(model.classes)[expected[rows].argmax(axis=1)].tolist()
    np.testing.assert_allclose(predicted["confidence"].to_numpy(), expected[rows].max(axis=1), atol=1e-4)
    assert json.loads((out / "model" / "metrics.json").read_text())["mode"] == "frozen backbone"


def test_rerun_reuses_the_embeddings_without_running_the_backbone(colour_data, weights_file, tmp_path,
                                                                 monkeypatch):
    images, labels, _ = colour_data
    out = tmp_path / "out"
    assert summary_of(scan(images, labels, out, "--weights", str(weights_file)))["embeddings"]["status"] == "computed"

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone ran although the embeddings are cached")

    monkeypatch.setattr(embeddings_module, "compute_embeddings", no_backbone)
    monkeypatch.setattr(embeddings_module, "create_backbone", no_backbone)
    rerun = summary_of(scan(images, labels, out, "--weights", str(weights_file), "--folds", "2", epochs=7))

    assert rerun["embeddings"]["status"] == "reused"
    assert rerun["settings"]["method_settings"]["scored_with"] == "out of fold"
    folds = pd.read_parquet(out / "samples.parquet")["fold"].dropna()
    assert sorted(folds.unique().tolist()) == [0, 1]


def test_changed_image_or_weights_invalidate_the_cache(colour_data, weights_file, tmp_path):
    images, labels, _ = colour_data
    copy = tmp_path / "images"
    copy.mkdir()
    for path in images.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    out = tmp_path / "out"
    first = summary_of(scan(copy, labels, out, "--weights", str(weights_file), epochs=3))
    assert summary_of(scan(copy, labels, out, "--weights", str(weights_file), epochs=3))["embeddings"]["status"] == "reused"

    changed = copy / sorted(p.name for p in copy.iterdir())[0]
    changed.write_bytes((copy / sorted(p.name for p in copy.iterdir())[1]).read_bytes())
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = summary_of(scan(copy, labels, out, "--weights", str(weights_file), epochs=3))
    assert again["embeddings"]["status"] == "computed"
    assert again["embeddings"]["file"] == first["embeddings"]["file"]

    other_weights = tmp_path / "other.safetensors"
    other_weights.write_bytes(weights_file.read_bytes())
    other = summary_of(scan(copy, labels, out, "--weights", str(other_weights), epochs=3))
    assert other["embeddings"]["status"] == "computed"
    assert other["embeddings"]["file"] != first["embeddings"]["file"]


def test_head_ranks_planted_errors_above_chance(colour_data, weights_file, tmp_path):
    images, labels, planted = colour_data
    out = tmp_path / "out"
    summary_of(scan(images, labels, out, "--weights", str(weights_file), epochs=40))
    samples = pd.read_parquet(out / "samples.parquet")
    audited = samples["status"] == "audited"
    ap = average_precision(planted[audited.to_numpy()], samples.loc[audited, "error_probability"].to_numpy())
    chance = planted[audited.to_numpy()].mean()
    assert ap > 3 * chance, (ap, chance)


def test_without_weights_it_warns_about_random_features(colour_data, tmp_path):
    images, labels, _ = colour_data
    result = scan(images, labels, tmp_path / "out", epochs=2)
    summary = summary_of(result)
    assert "--freeze-backbone without --pretrained/--weights uses random features" in result.stderr
    assert any("random features" in note for note in summary["notes"])
    assert summary["embeddings"]["weights"].startswith("random init seed 0")


def test_methods_that_need_the_full_network_are_refused(colour_data, tmp_path):
    images, labels, _ = colour_data
    result = scan(images, labels, tmp_path / "out", "--method", "nal", epochs=2)
    assert result.exit_code == 2
    assert "Error: --freeze-backbone trains a linear head with elr or ce; --method nal needs the full network" \
        in result.stderr
    assert not (tmp_path / "out" / "cache").exists()


def test_head_folded_into_the_timm_classifier_gives_the_same_logits():
    import timm

    torch.manual_seed(0)
    backbone = timm.create_model(TINY_MODEL, num_classes=0).eval()
    images = torch.randn(5, 3, TINY_SIZE, TINY_SIZE)
    with torch.no_grad():
        features = backbone(images)
        head = LinearHead(features.mean(0) + 0.3, features.std(0) + 0.5, n_classes=4)
        expected = head(features)
        network = attach_head(backbone, head)
        assert torch.allclose(network(images), expected, atol=1e-5)
    assert network.get_classifier().out_features == 4


def test_stale_key_is_not_reused(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    key = embeddings_module.EmbeddingKey(model="m", image_size=16, weights="w", rows_sha256="a", n_rows=2,
                                         timm_version="1", torch_version="2")
    stem = cache / key.file_stem()
    np.save(stem.with_suffix(".npy"), np.ones((2, 3), np.float32))
    (stem.with_suffix(".json")).write_text(json.dumps(key.__dict__))
    assert embeddings_module.load_cached_embeddings(cache, key) is not None
    other_rows = embeddings_module.EmbeddingKey(**{**key.__dict__, "rows_sha256": "b"})
    assert embeddings_module.load_cached_embeddings(cache, other_rows) is None
    other_count = embeddings_module.EmbeddingKey(**{**key.__dict__, "n_rows": 3})
    assert embeddings_module.load_cached_embeddings(cache, other_count) is None
