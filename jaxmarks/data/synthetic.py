"""The synthetic faces' renderer, as the library uses it beyond its dataset builder
(face-free backgrounds: negatives for detector training). The renderer itself lives
with its builder, ``tfds_builders/synthetic_faces/renderer.py``; only this data-layer
module reaches into it.
"""

from tfds_builders.synthetic_faces.renderer import render_background

__all__ = ["render_background"]
