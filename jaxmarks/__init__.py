"""jaxmarks: facial landmark detection methods in JAX/Flax."""

from jaxmarks import metrics, schemes, shapes, transforms

__version__ = "0.1.0"
__all__ = ["metrics", "schemes", "shapes", "transforms"]
