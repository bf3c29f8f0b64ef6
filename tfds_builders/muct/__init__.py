"""MUCT (76 landmarks) dataset builder; importing registers ``muct``."""

from tfds_builders.muct.muct_dataset_builder import Builder

__all__ = ["Builder"]
