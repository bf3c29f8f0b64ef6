"""The face datasets' TFDS builders, opened and built without TensorFlow.

Importing this module registers every builder in ``tfds_builders`` with TFDS,
after which ``tfds.builder("ibug300w", data_dir=...)`` finds them. Records are
read with ``builder.as_data_source(split)`` (array_record, random access, no
TensorFlow).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import tensorflow_datasets as tfds

import tfds_builders

tfds_builders.register_all()

__all__ = ["get_builder", "prepare", "load_source", "scheme_of"]


def get_builder(name: str, data_dir: str | None = None, config: str | None = None):
  """The registered TFDS builder ``name`` (optionally a named builder config)."""
  full = f"{name}/{config}" if config else name
  try:
    return tfds.builder(full, data_dir=data_dir, file_format="array_record")
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"unknown dataset {full!r}; jaxmarks builders: "
                     f"{', '.join(tfds_builders.BUILDERS)}") from e


def prepare(name: str, data_dir: str | None = None, manual_dir: str | None = None,
            config: str | None = None):
  """Builds the dataset if it is not built yet (reading ``manual_dir``); returns the builder."""
  builder = get_builder(name, data_dir, config)
  if manual_dir and not builder.is_prepared() and not pathlib.Path(manual_dir).is_dir():
    raise FileNotFoundError(
        f"the manual directory of dataset {name!r}, {manual_dir}, does not exist: set "
        "JAXMARKS_DATASETS to the folder holding your copies of the datasets, or pass "
        "--config.data.manual_dir=/path/to/it (see the README)")
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.abspath(manual_dir) if manual_dir else None)
  builder.download_and_prepare(download_config=download_config, file_format="array_record")
  return builder


def load_source(name: str, split: str, data_dir: str | None = None,
                manual_dir: str | None = None, config: str | None = None):
  """Random-access source of one split, preparing the dataset first if needed.

  Returns ``(source, builder)``; ``source[i]`` is a dict of numpy arrays.
  """
  builder = prepare(name, data_dir, manual_dir, config)
  if split not in builder.info.splits:
    raise ValueError(f"dataset {name!r} has no split {split!r}; it has: "
                     f"{', '.join(sorted(builder.info.splits))}")
  return builder.as_data_source(split=split), builder


def scheme_of(builder: Any) -> str:
  """The landmark scheme name stored in a builder's metadata."""
  meta = builder.info.metadata or {}
  if "scheme" not in meta:
    raise ValueError(f"dataset {builder.name!r} has no 'scheme' in its metadata")
  return meta["scheme"]
