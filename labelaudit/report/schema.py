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
    # Data issues (DESIGN.md §4, docs/report-schema.md): null where not computed.
    ("duplicate_set", pa.int32()),
    ("is_duplicate", pa.bool_()),
    ("is_leak", pa.bool_()),
    ("outlier_score", pa.float32()),
    ("is_outlier", pa.bool_()),
    ("quality_issues", pa.list_(pa.string())),
    ("brightness", pa.float32()),
    ("sharpness", pa.float32()),
    ("entropy", pa.float32()),
    ("brightness_p99", pa.float32()),
    ("brightness_p05", pa.float32()),
    ("colourfulness", pa.float32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
])
SAMPLES_COLUMNS = SAMPLES_SCHEMA.names
#: the data-issue columns of SAMPLES_SCHEMA (after ``fold``)
DATA_ISSUE_COLUMNS = SAMPLES_COLUMNS[SAMPLES_COLUMNS.index("duplicate_set"):]

CLASSES_SCHEMA = pa.schema([
    ("label", pa.string()),
    ("n", pa.int64()),
    ("n_issues", pa.int64()),
    ("estimated_noise_rate", pa.float32()),
    ("most_confused_with", pa.string()),
    # Class balance and weak classes (issue 14): share of the audited rows, flagged when rare; the model's
    # agreement with the given labels, flagged when far below the other classes'.
    ("share", pa.float32()),
    ("is_underrepresented", pa.bool_()),
    ("agreement", pa.float32()),
    ("is_weak", pa.bool_()),
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
