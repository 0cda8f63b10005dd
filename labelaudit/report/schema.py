"""Column names and types of the run directory's Parquet files (DESIGN.md §4)."""

from __future__ import annotations

import pyarrow as pa

SAMPLES_FILE = "samples.parquet"
CLASSES_FILE = "classes.parquet"
TRANSITION_FILE = "transition.parquet"
SUMMARY_FILE = "summary.json"
RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.npz"
MODEL_DIR = "model"
MODEL_WEIGHTS_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
MODEL_CLASSES_FILE = "classes.json"
MODEL_METRICS_FILE = "metrics.json"

AUDITED = "audited"

SAMPLES_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("given_label", pa.string()),
    ("suggested_label", pa.string()),
    ("p_given", pa.float32()),
    ("label_quality", pa.float32()),
    ("error_probability", pa.float32()),
    ("is_issue", pa.bool_()),
    ("rank", pa.int32()),
    ("status", pa.string()),
    ("fold", pa.int16()),
])
SAMPLES_COLUMNS = SAMPLES_SCHEMA.names

CLASSES_SCHEMA = pa.schema([
    ("label", pa.string()),
    ("n", pa.int64()),
    ("n_issues", pa.int64()),
    ("estimated_noise_rate", pa.float32()),
    ("most_confused_with", pa.string()),
])

TRANSITION_SCHEMA = pa.schema([
    ("true_label", pa.string()),
    ("noisy_label", pa.string()),
    ("probability", pa.float64()),
    ("ci_low", pa.float64()),
    ("ci_high", pa.float64()),
    ("count", pa.float64()),
    ("estimator", pa.string()),
    # True on the rows of a true class that had no trusted example (GLC): an identity placeholder.
    ("no_trusted_examples", pa.bool_()),
])
TRANSITION_ESTIMATORS = ("glc", "confident_joint", "anchor", "nal")
