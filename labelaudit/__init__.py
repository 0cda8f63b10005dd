"""labelaudit: find likely label errors in image-classification datasets."""

__version__ = "0.1.0"


def load_model(directory, *, device: str = "cpu"):
    """Load a trained model directory (``labelaudit-out/model``); see ``LoadedModel``."""
    from .train.checkpoint import load_model as _load_model

    return _load_model(directory, device=device)


__all__ = ["__version__", "load_model"]
