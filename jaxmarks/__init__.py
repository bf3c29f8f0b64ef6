"""jaxmarks: facial landmark detection methods in JAX/Flax."""

from jaxmarks import metrics, schemes, shapes, transforms
from jaxmarks.compilation_cache import enable as enable_compilation_cache

__version__ = "0.1.0"
__all__ = ["enable_compilation_cache", "metrics", "schemes", "shapes", "transforms"]
