"""300-W (68 iBUG landmarks) dataset builder; importing registers ``ibug300w``."""

from tfds_builders.ibug300w.ibug300w_dataset_builder import Builder

__all__ = ["Builder"]
