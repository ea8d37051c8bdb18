"""Datasets: a registry of loaders (one module each). See :mod:`mlhead.datasets.base`."""

from .base import (DATASETS, DatasetError, DatasetLoader, DatasetOption, Example, LoadedDataset, check_options,
                   declared_options, default_data_dir, get_loader, multi_hot, register, split_indices)
from . import arxiv, movieposters, mulan, reuters, table, voc  # noqa: F401  (registration)

__all__ = ["DATASETS", "DatasetError", "DatasetLoader", "DatasetOption", "Example", "LoadedDataset",
           "check_options", "declared_options", "default_data_dir", "get_loader", "multi_hot", "register",
           "split_indices"]
