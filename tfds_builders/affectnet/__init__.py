"""AffectNet (expressions, valence, arousal, 68 points) dataset builder; importing
registers ``affectnet``."""

from tfds_builders.affectnet.affectnet_dataset_builder import Builder

__all__ = ["Builder"]
