"""CK+ (expressions of posed sequences, 68 points) dataset builder; importing registers
``ckplus``."""

from tfds_builders.ckplus.ckplus_dataset_builder import Builder

__all__ = ["Builder"]
