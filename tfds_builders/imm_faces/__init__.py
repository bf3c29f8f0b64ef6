"""IMM face databases (58-point full, 73-point frontal); importing registers ``imm_faces``."""

from tfds_builders.imm_faces.imm_faces_dataset_builder import Builder

__all__ = ["Builder"]
