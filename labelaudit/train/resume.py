"""Interrupt and resume: the state of a training run at an epoch boundary, saved on Ctrl-C.

While it trains, :func:`labelaudit.train.loop.fit` keeps in memory a copy of everything that decides
the rest of the run as it stood at the start of the current epoch: every network's weights and
buffers, the optimiser and learning-rate schedule, the method's own state (ELR's targets and its
(β, λ) choice, ELR+'s EMA networks and targets), the random number generators (torch, the loop's
data-order generator, numpy, Python) and the per-epoch history. On Ctrl-C that copy is written to
the run directory in one atomic rename; ``--resume`` loads it, checks that it was made from the
same inputs and settings, and runs the remaining epochs, so on CPU the result is the one an
uninterrupted run with the same seed gives.

With ``scan --folds K`` (:class:`FoldCheckpoint`) the one checkpoint file also holds the fold of
every row and the out-of-fold predictions of the folds finished so far; the interrupted fold's
training state is nested in it. ``--resume`` skips the finished folds and continues the interrupted
one (each fold's training starts from the seed, so the result is again an uninterrupted run's).

The file holds tensors, numbers, strings, lists and dicts only (``torch.save``), and is read with
``torch.load(weights_only=True)``: loading a checkpoint never runs code from it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import __version__
from ..errors import LabelAuditError
from ..report.files import atomic_path

#: one per command, so that finishing a ``train`` never removes an interrupted ``scan``'s checkpoint
CHECKPOINT_FILE = "checkpoint-{command}.pt"
#: where the fold being trained keeps its own checkpoint while the fold checkpoint is made or read
FOLD_TRAINING_FILE = ".checkpoint-{command}-fold.pt"
FORMAT_VERSION = 1
#: longest value shown when a checkpoint's settings differ from the command's
SHOWN_CHARS = 60


@dataclass
class Checkpointing:
    """Where :func:`fit` saves its state when interrupted, and whether it continues from that state.

    path: the checkpoint file; resume: start from it (it must exist); inputs: JSON-able description
    of what the run is made from (dataset, method and its options…) — a resume from a checkpoint
    whose inputs, training settings or data differ is refused.
    """

    path: Path
    resume: bool = False
    inputs: dict[str, Any] = field(default_factory=dict)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a checkpointed :func:`fit`.

    checkpoint: the file written, or None when training had not reached its first epoch (e.g. during
    the first-stage model of forward correction or the noise adaptation layer): nothing to resume.
    epochs_done, epochs: completed epochs saved in the checkpoint, of all epochs.
    """

    def __init__(self, checkpoint: Path | None, epochs_done: int, epochs: int) -> None:
        super().__init__()
        self.checkpoint = checkpoint
        self.epochs_done = epochs_done
        self.epochs = epochs

    def hint(self, command: str) -> str:
        """One line for the user: what was saved and how to continue with ``labelaudit {command}``."""
        if self.checkpoint is None:
            return ("Interrupted before training reached its first epoch (e.g. in a first-stage model); "
                    f"nothing saved to resume from, run `labelaudit {command}` again")
        return (f"Interrupted: {self.epochs_done} of {self.epochs} epochs saved in {self.checkpoint}; "
                f"to continue, run the same `labelaudit {command}` command with --resume")


class FoldsInterrupted(TrainingInterrupted):
    """Ctrl-C during ``scan --folds``: ``folds_done`` of ``n_folds`` folds finished and saved, and the
    interrupted fold ``fold`` (0-based) saved after ``epochs_done`` of its ``epochs`` epochs."""

    def __init__(self, checkpoint: Path, *, fold: int, folds_done: int, n_folds: int, epochs_done: int,
                 epochs: int) -> None:
        super().__init__(checkpoint, epochs_done, epochs)
        self.fold, self.folds_done, self.n_folds = fold, folds_done, n_folds

    def hint(self, command: str) -> str:
        return (f"Interrupted: {self.folds_done} of {self.n_folds} folds and {self.epochs_done} of {self.epochs} "
                f"epochs of fold {self.fold + 1} saved in {self.checkpoint}; to continue, run the same "
                f"`labelaudit {command}` command with --resume")


@dataclass
class FoldProgress:
    """The folds finished so far.

    assignment: (N,) int fold of every row; pred_probs: (N, K) float64 class probabilities, filled at
    the held-out rows of the ``completed`` folds (zero elsewhere); method_settings: ``fold_k`` -> the
    settings the method chose in fold k.
    """

    assignment: np.ndarray
    pred_probs: np.ndarray
    completed: list[int] = field(default_factory=list)
    method_settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def empty(cls, assignment: np.ndarray, n_classes: int) -> "FoldProgress":
        return cls(np.asarray(assignment), np.zeros((len(assignment), n_classes), np.float64))

    def add(self, fold: int, pred_probs: np.ndarray, method_settings: dict[str, Any]) -> None:
        """Record fold ``fold``: ``pred_probs`` (rows of the fold, K) of its held-out rows, in row order."""
        self.pred_probs[self.assignment == fold] = pred_probs
        # kept as the JSON the run directory stores, so a resumed run reports exactly the same settings
        self.method_settings[f"fold_{fold}"] = json.loads(json.dumps(method_settings, default=str))
        self.completed.append(int(fold))


class FoldCheckpoint:
    """Ctrl-C and ``--resume`` for the fold loop of ``scan --folds`` (one process).

    checkpoint: the scan's checkpoint file and inputs; fingerprint: gives :func:`run_fingerprint` of all
    rows (it hashes every image, so it is called only when the file is read or written); progress: the
    finished folds — loaded from the file by :meth:`open` on resume.
    """

    def __init__(self, checkpoint: Checkpointing, fingerprint: Callable[[], dict[str, Any]], progress: FoldProgress,
                 resume_fold: int | None = None) -> None:
        self.checkpoint, self.fingerprint, self.progress = checkpoint, fingerprint, progress
        self.resume_fold = resume_fold  # the fold whose training continues from a saved state
        self.training_path = checkpoint.path.with_name(
            FOLD_TRAINING_FILE.format(command=checkpoint.inputs.get("command", "scan")))

    @classmethod
    def open(cls, checkpoint: Checkpointing, fingerprint: Callable[[], dict[str, Any]], assignment: np.ndarray,
             n_classes: int) -> "FoldCheckpoint":
        """Start afresh, or with ``checkpoint.resume`` continue from the saved folds (refused with one
        line when the file was made from other inputs or settings)."""
        progress = FoldProgress.empty(assignment, n_classes)
        if not checkpoint.resume:
            return cls(checkpoint, fingerprint, progress)
        state = load_checkpoint(checkpoint.path, fingerprint())
        saved_assignment = state.get("fold_assignment")
        if not isinstance(saved_assignment, torch.Tensor) or not np.array_equal(saved_assignment.numpy(), assignment):
            raise LabelAuditError(f"the checkpoint {checkpoint.path} does not hold this scan's folds; run without "
                                  "--resume to start over")
        progress.pred_probs = state["pred_probs"].numpy().astype(np.float64)
        progress.completed = [int(fold) for fold in state["completed_folds"]]
        progress.method_settings = json.loads(state["method_settings"])
        opened = cls(checkpoint, fingerprint, progress, resume_fold=int(state["fold"]))
        if state.get("training") is None:
            opened.resume_fold = None  # interrupted before the fold's first epoch: it starts over
        else:  # where fit() reads it
            with atomic_path(opened.training_path) as temporary:
                torch.save(state["training"], temporary)
        return opened

    def for_fold(self, fold: int) -> Checkpointing:
        """The checkpoint settings for :func:`fit` of fold ``fold``."""
        inputs = {**self.checkpoint.inputs, "fold": int(fold)}
        return Checkpointing(self.training_path, resume=fold == self.resume_fold, inputs=inputs)

    def interrupted(self, fold: int, interruption: KeyboardInterrupt, *, n_folds: int,
                    epochs: int) -> FoldsInterrupted:
        """Save the finished folds and the state of fold ``fold`` (what ``fit`` saved when it was
        interrupted in training, else nothing: the fold starts over) in one file, atomically."""
        training, epochs_done = None, 0
        if isinstance(interruption, TrainingInterrupted) and interruption.checkpoint is not None:
            training = torch.load(interruption.checkpoint, map_location="cpu", weights_only=True)
            epochs_done, epochs = interruption.epochs_done, interruption.epochs
        payload = {
            "format": FORMAT_VERSION, "labelaudit_version": __version__,
            "fingerprint": json.dumps(self.fingerprint(), sort_keys=True),
            "fold_assignment": torch.from_numpy(np.asarray(self.progress.assignment, np.int64)),
            "pred_probs": torch.from_numpy(np.ascontiguousarray(self.progress.pred_probs, np.float64)),
            "completed_folds": list(self.progress.completed),
            "method_settings": json.dumps(self.progress.method_settings),
            "fold": int(fold),
            "training": training,
        }
        with atomic_path(self.checkpoint.path) as temporary:
            torch.save(payload, temporary)
        self.training_path.unlink(missing_ok=True)
        return FoldsInterrupted(self.checkpoint.path, fold=fold, folds_done=len(self.progress.completed),
                                n_folds=n_folds, epochs_done=epochs_done, epochs=epochs)

    def finished(self) -> None:
        """All folds done: the checkpoint is not needed any more."""
        self.checkpoint.path.unlink(missing_ok=True)
        self.training_path.unlink(missing_ok=True)


def checkpoint_path(out: str | Path, command: str) -> Path:
    """Where ``labelaudit {command}`` (scan or train) keeps its checkpoint in run directory ``out``."""
    return Path(out) / CHECKPOINT_FILE.format(command=command)


def require_checkpoint(out: str | Path, command: str) -> Path:
    """The checkpoint of ``command`` in ``out``; a one-line error when there is none to resume from."""
    path = checkpoint_path(out, command)
    if not path.is_file():
        raise LabelAuditError(f"nothing to resume in {out}: no {path.name} (one is written when `labelaudit "
                              f"{command}` is interrupted with Ctrl-C, and removed when it finishes); run without "
                              "--resume")
    return path


def run_fingerprint(inputs: dict[str, Any], *, method_name: str, config: dict[str, Any], images: np.ndarray,
                    labels: np.ndarray, trusted: np.ndarray, n_classes: int) -> dict[str, Any]:
    """What a checkpoint must have been made from to be resumed, as JSON values.

    images: (N, H, W, 3) uint8 decoded training images, labels: (N,) int, trusted: (N,) bool — hashed,
    so a changed image file or label is caught even when the CSV is the same.
    """
    digest = hashlib.blake2b(digest_size=16)
    for array in (images, np.asarray(labels, np.int64), np.asarray(trusted, bool)):
        contiguous = np.ascontiguousarray(array)
        digest.update(str(contiguous.shape).encode())
        digest.update(memoryview(contiguous).cast("B"))
    fingerprint = {"inputs": inputs, "method": method_name, "train": config, "n_classes": int(n_classes),
                   "n_samples": int(len(labels)), "data_hash": digest.hexdigest()}
    return json.loads(json.dumps(fingerprint, sort_keys=True, default=str))


def capture_state(*, method: Any, optimizer: torch.optim.Optimizer, schedule: Any, generator: torch.Generator,
                  epochs_done: int, history: list[dict[str, float]]) -> dict[str, Any]:
    """A CPU copy of the training state after ``epochs_done`` epochs (``method`` is a TrainingMethod)."""
    return {
        "epochs_done": int(epochs_done),
        "method": _cpu_copy(method.state_dict()),
        "optimizer": _cpu_copy(optimizer.state_dict()),
        "schedule": copy.deepcopy(schedule.state_dict()),
        "rng": _rng_state(generator),
        "history": copy.deepcopy(history),
    }


def save_checkpoint(path: Path, state: dict[str, Any], fingerprint: dict[str, Any]) -> Path:
    """Write ``state`` (from :func:`capture_state`) and ``fingerprint`` to ``path`` atomically."""
    payload = {"format": FORMAT_VERSION, "labelaudit_version": __version__,
               "fingerprint": json.dumps(fingerprint, sort_keys=True), **state}
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The saved state in ``path``, after checking it was made from ``fingerprint``'s inputs and settings."""
    if not path.is_file():
        raise LabelAuditError(f"nothing to resume: no checkpoint {path}; run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError) as exc:
        raise LabelAuditError(f"cannot read checkpoint {path} ({_first_line(exc)}); delete it and run without "
                              "--resume") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise LabelAuditError(f"{path} is not a labelaudit checkpoint this version can resume; delete it and "
                              "run without --resume")
    saved = json.loads(state["fingerprint"])
    difference = first_difference(saved, fingerprint)
    if difference is not None:
        key, old, new = difference
        raise LabelAuditError(
            f"the checkpoint {path} was made from other inputs or settings ({key}: {_short(old)} then, "
            f"{_short(new)} now); run the interrupted command unchanged with --resume, or without --resume to "
            "start over"
        )
    return state


def restore_state(state: dict[str, Any], *, method: Any, optimizer: torch.optim.Optimizer, schedule: Any,
                  generator: torch.Generator) -> None:
    """Put a loaded checkpoint back into the method, optimiser, schedule and random number generators."""
    try:
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise LabelAuditError(f"the checkpoint does not fit this model ({_first_line(exc)}); run without "
                              "--resume") from None
    schedule.load_state_dict(state["schedule"])
    _set_rng_state(state["rng"], generator)


def first_difference(old: Any, new: Any, prefix: str = "") -> tuple[str, Any, Any] | None:
    """The first key (dotted, e.g. ``train.lr``) whose JSON value differs between ``old`` and ``new``."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            found = first_difference(old.get(key), new.get(key), f"{prefix}.{key}" if prefix else str(key))
            if found is not None:
                return found
        return None
    return None if old == new else (prefix or "value", old, new)


def _cpu_copy(value: Any) -> Any:
    """Tensors copied to the CPU, in the same nesting of dicts, lists and tuples."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(item) for item in value)
    return copy.deepcopy(value)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    saved_numpy = state["numpy"]
    np.random.set_state((saved_numpy["name"], saved_numpy["keys"].numpy().astype(np.uint32),
                         saved_numpy["position"], saved_numpy["has_gauss"], saved_numpy["cached_gaussian"]))
    saved_python = state["python"]
    random.setstate((saved_python["version"], tuple(saved_python["internal"]), saved_python["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
