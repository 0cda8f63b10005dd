"""Data layer: label CSV reading, images-folder confinement, image decoding, datasets."""

from labelaudit.data.csvio import read_label_csv
from labelaudit.data.dataset import LabelledImages, load_labelled_images, read_classes_file
from labelaudit.data.images import ImageDecodeError, decode_images, load_image_rgb
from labelaudit.data.paths import resolve_under_root

__all__ = [
    "ImageDecodeError",
    "LabelledImages",
    "decode_images",
    "load_image_rgb",
    "load_labelled_images",
    "read_classes_file",
    "read_label_csv",
    "resolve_under_root",
]
