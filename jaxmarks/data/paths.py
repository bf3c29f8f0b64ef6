"""Where a user's copies of the real face datasets are: one setting, ``JAXMARKS_DATASETS``.

The real datasets (300-W, MTFL, IMM, ...) cannot be downloaded by the library
(their licences ask for a manual download). Keep them under one folder, one
subfolder each, as they are distributed::

  $JAXMARKS_DATASETS/300w/{afw,helen,lfpw,ibug,01_Indoor,02_Outdoor}/...
  $JAXMARKS_DATASETS/mtfl/...
  $JAXMARKS_DATASETS/imm_frontal/...

and point ``JAXMARKS_DATASETS`` at it. Unset, it is ``../shared/datasets`` from
the current directory (the layout this project is developed in). A config's
``data.manual_dir`` is ``dataset_dir(<subfolder>)`` made absolute when the
config is built; ``--config.data.manual_dir=/path/to/300w`` overrides it for one
run. The tests read the same setting (their default is ``../shared/datasets``
from the repository root, see ``tests/helpers.py``).

Datasets the project derives from them (MTFL's faces with pseudo-labelled 68
points, ``python -m experiments.pseudo_labels``) are written under a second folder,
``JAXMARKS_DERIVED`` (default ``~/jaxmarks_derived``), never into the copies above.
"""

from __future__ import annotations

import os
import pathlib

__all__ = ["ENV_VAR", "DEFAULT_ROOT", "FOLDERS", "DERIVED_ENV_VAR", "DERIVED", "datasets_root",
           "dataset_dir", "derived_dir", "default_manual_dir"]

ENV_VAR = "JAXMARKS_DATASETS"
DEFAULT_ROOT = "../shared/datasets"
# TFDS builder name -> its subfolder of ``$JAXMARKS_DATASETS``.
FOLDERS = {"ibug300w": "300w", "mtfl": "mtfl", "imm_faces": "imm_frontal", "muct": "muct",
           "bioid": "bioid", "aflw": "aflw", "widerface": "widerface", "celeba": "celeba",
           "affectnet": "affectnet", "ckplus": "ckplus"}
DERIVED_ENV_VAR = "JAXMARKS_DERIVED"
DEFAULT_DERIVED = "~/jaxmarks_derived"
# Derived builder name -> its subfolder of ``$JAXMARKS_DERIVED``.
DERIVED = {"mtfl_pseudo68": "mtfl_pseudo68"}


def datasets_root() -> pathlib.Path:
  """``$JAXMARKS_DATASETS`` (default ``../shared/datasets``), absolute; may not exist."""
  return pathlib.Path(os.environ.get(ENV_VAR) or DEFAULT_ROOT).expanduser().resolve()


def dataset_dir(subfolder: str) -> str:
  """The manual directory of one dataset, e.g. ``dataset_dir("300w")``, as an absolute path."""
  return str(datasets_root() / subfolder)


def derived_dir(subfolder: str) -> str:
  """A derived dataset's folder under ``$JAXMARKS_DERIVED``, absolute."""
  root = os.environ.get(DERIVED_ENV_VAR) or DEFAULT_DERIVED
  return str(pathlib.Path(root).expanduser().resolve() / subfolder)


def default_manual_dir(dataset: str) -> str:
  """``dataset_dir`` of a builder's usual subfolder (``FOLDERS``), or ``derived_dir``
  of a derived one (``DERIVED``); "" for a dataset that needs none (the synthetic
  faces) or that is not listed."""
  if dataset in DERIVED:
    return derived_dir(DERIVED[dataset])
  return dataset_dir(FOLDERS[dataset]) if dataset in FOLDERS else ""
