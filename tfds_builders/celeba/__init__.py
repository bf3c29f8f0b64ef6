"""CelebA (5 landmarks + 40 attributes; configs wild and aligned); importing registers ``celeba``."""

from tfds_builders.celeba.celeba_dataset_builder import Builder

__all__ = ["Builder"]
