"""AFLW (21 landmarks) dataset builder; importing registers ``aflw``."""

from tfds_builders.aflw.aflw_dataset_builder import Builder

__all__ = ["Builder"]
