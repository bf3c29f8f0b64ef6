"""Special layers of the deep methods, each usable and tested on its own."""

from jaxmarks.layers.activations import PReLU, abs_tanh  # noqa: F401
from jaxmarks.layers.dan_layers import (  # noqa: F401
    FeatureImage,
    landmark_heatmap,
    similarity_to_reference,
    transform_image,
    upscale_nearest,
)
from jaxmarks.layers.local_conv import LocallySharedConv, region_edges  # noqa: F401
