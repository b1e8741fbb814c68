"""Datasets as record tables: one small module per on-disk layout, one registry of names."""

from clef.data.registry import DATASETS, load_dataset

__all__ = ["DATASETS", "load_dataset"]
