"""A small registry of training methods, looked up by the names users type (``--method elr+``)."""

from __future__ import annotations

from typing import Any

from ..errors import LabelAuditError
from .base import TrainingMethod

_METHODS: dict[str, type[TrainingMethod]] = {}


def register(cls: type[TrainingMethod]) -> type[TrainingMethod]:
    _METHODS[cls.name] = cls
    return cls


def method_names() -> list[str]:
    """Registered names, sorted (registration order depends on which module was imported first)."""
    _import_builtin_methods()
    return sorted(_METHODS)


def create_method(name: str, **options: Any) -> TrainingMethod:
    """Build the method called ``name``; options are its keyword arguments (None means default)."""
    _import_builtin_methods()
    if name not in _METHODS:
        raise LabelAuditError(f"unknown method {name!r}; choose one of {', '.join(sorted(_METHODS))}")
    cls = _METHODS[name]
    accepted = {k: v for k, v in options.items() if v is not None}
    try:
        return cls(**accepted)
    except TypeError as exc:
        raise LabelAuditError(f"method {name!r} does not take these options: {exc}") from None


def _import_builtin_methods() -> None:
    from . import ce, elr, elr_plus, forward, glc, nal  # noqa: F401  (importing registers them)
