"""BioID (FGnet 20 landmarks) dataset builder; importing registers ``bioid``."""

from tfds_builders.bioid.bioid_dataset_builder import Builder

__all__ = ["Builder"]
