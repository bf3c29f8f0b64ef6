"""MTFL training faces with 68 points from jaxmarks' own models (pseudo-labels)."""

from tfds_builders.mtfl_pseudo68.mtfl_pseudo68_dataset_builder import Builder  # noqa: F401
