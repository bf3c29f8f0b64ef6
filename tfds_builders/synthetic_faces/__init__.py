"""``synthetic_faces``: procedurally rendered faces with exact iBUG-68 landmarks (no download)."""

from tfds_builders.synthetic_faces.synthetic_faces_dataset_builder import Builder, SyntheticFacesConfig

__all__ = ["Builder", "SyntheticFacesConfig"]
