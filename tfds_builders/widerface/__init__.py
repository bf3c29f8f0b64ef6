"""WIDER FACE (face boxes with attributes); importing registers ``widerface``.

(Not ``wider_face``: TFDS's own catalogue has a TensorFlow-only builder of that name.)
"""

from tfds_builders.widerface.widerface_dataset_builder import Builder

__all__ = ["Builder"]
