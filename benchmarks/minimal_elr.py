"""The least code that does the work of ``labelaudit scan`` with fixed ELR settings (the baseline of throughput.py).

Decode the PNGs listed in a label CSV to RGB squares, train a timm model with the ELR loss (β, λ fixed)
with the same optimiser, schedule, batch size, epochs and crop+flip augmentation as labelaudit, on
pre-decoded uint8 tensors, take each image's class probabilities the way labelaudit's ELR scan does
(the renormalised ELR targets; ``--forward-predict``: one more pass of the trained model instead),
score every row (self-confidence, confident-learning flag) and write the report: the rows as Parquet
and the model's weights. No validation, no bootstrap intervals, no summary.

    OMP_NUM_THREADS=1 python benchmarks/minimal_elr.py IMAGES LABELS.csv --image-size 16 --epochs 2 --out DIR
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import timm
import torch
import torch.nn.functional as F
from PIL import Image


def decode(paths: list[Path], size: int) -> np.ndarray:
    images = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            images[i] = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
    return images


def crop_flip(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    n, _, height, width = batch.shape
    padded = F.pad(batch, (padding,) * 4)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(height))[:, None, :, None]
    cols = (left[:, None] + torch.arange(width))[:, None, None, :]
    cropped = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], cropped.flip(3), cropped)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("images", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--beta", type=float, default=0.7)
    parser.add_argument("--lam", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--forward-predict", action="store_true",
                        help="probabilities from a forward pass of the trained model, not the ELR targets")
    parser.add_argument("--out", type=Path, default=None, help="write samples.parquet and model.pt here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    with args.labels.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    classes = sorted({row["label"] for row in rows})
    labels = torch.tensor([classes.index(row["label"]) for row in rows])
    images = torch.from_numpy(decode([args.images / row["path"] for row in rows], args.image_size)).permute(0, 3, 1, 2)
    decoded = time.perf_counter()

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = timm.create_model(args.model, num_classes=len(classes))
    mean = torch.tensor(model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    n, k = len(labels), len(classes)
    targets = torch.zeros(n, k)
    steps = (n // args.batch_size) * args.epochs
    optimiser = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for _ in range(args.epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n // args.batch_size * args.batch_size, args.batch_size):
            idx = order[start:start + args.batch_size]
            x = crop_flip((images[idx].float() / 255 - mean) / std, args.image_size // 8, generator)
            logits = model(x)
            p = F.softmax(logits, dim=1).clamp(1e-4, 1 - 1e-4)
            with torch.no_grad():
                targets[idx] = args.beta * targets[idx] + (1 - args.beta) * p / p.sum(dim=1, keepdim=True)
            loss = F.cross_entropy(logits, labels[idx]) + args.lam * torch.log(1 - (targets[idx] * p).sum(1)).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    trained = time.perf_counter()

    if args.forward_predict:
        model.eval()
        with torch.no_grad():
            probs = torch.cat([F.softmax(model((images[s:s + 256].float() / 255 - mean) / std), dim=1)
                               for s in range(0, n, 256)])
    else:  # labelaudit's ELR scan scores every row with its running-average targets
        probs = targets / targets.sum(dim=1, keepdim=True).clamp_min(1e-12)
    predicted = time.perf_counter()

    self_confidence = probs[torch.arange(n), labels]
    per_class = torch.bincount(labels, minlength=k).clamp_min(1)
    thresholds = torch.zeros(k).index_add_(0, labels, self_confidence) / per_class
    confident = probs >= thresholds
    suspect = confident.any(1) & (torch.where(confident, probs, torch.tensor(-1.0)).argmax(1) != labels)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "path": [row["path"] for row in rows], "given_label": [row["label"] for row in rows],
            "predicted_label": [classes[i] for i in probs.argmax(1).tolist()],
            "self_confidence": self_confidence.numpy(), "suspect": suspect.numpy(),
        }), args.out / "samples.parquet")
        torch.save(model.state_dict(), args.out / "model.pt")
    print(f"minimal: {n} images, {k} classes, torch threads {torch.get_num_threads()}, "
          f"decode {decoded - started:.2f} s, train {trained - decoded:.2f} s, "
          f"predict {predicted - trained:.2f} s ({'forward pass' if args.forward_predict else 'ELR targets'}), "
          f"score+write {time.perf_counter() - predicted:.2f} s, {int(suspect.sum())} suspects")


if __name__ == "__main__":
    main()
