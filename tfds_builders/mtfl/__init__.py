"""MTFL (5 landmarks + attributes) dataset builder; importing registers ``mtfl``."""

from tfds_builders.mtfl.mtfl_dataset_builder import Builder

__all__ = ["Builder"]
