"""TensorFlow-Datasets builders for face-landmark datasets (one folder per dataset).

Importing a builder module registers it with TFDS; ``register_all()`` imports
every builder so that ``tfds.builder("<name>", data_dir=...)`` finds it.
"""

import importlib

BUILDERS = ("ibug300w", "mtfl", "imm_faces", "muct", "bioid", "aflw", "synthetic_faces",
            "widerface", "celeba", "mtfl_pseudo68", "affectnet", "ckplus")


def register_all() -> None:
  """Imports every builder package under ``tfds_builders`` (registers them with TFDS)."""
  for name in BUILDERS:
    try:
      importlib.import_module(f"tfds_builders.{name}")
    except ModuleNotFoundError as e:  # a builder still being written; the others work
      if e.name != f"tfds_builders.{name}":
        raise
