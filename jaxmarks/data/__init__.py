"""Face data for every method: datasets, splits, the one crop, augmentation, batches.

  builders   the TFDS builders of ``tfds_builders`` (built from a manual
             directory, read as array_record without TensorFlow)
  paths      where a user's copies of the real datasets are (``JAXMARKS_DATASETS``)
  config     ``get_data_config()``: every setting, embedded as ``config.data``
  splits     ``"<split>[:fit|:holdout]"`` specs, record sources, image decoding
  crop       face box -> one similarity crop (the function every method uses)
  augment    training perturbations (DAN's defaults)
  loader     batches of crops: training through grain's dataset API (endless,
             resumable), evaluation through a ``DataLoader`` (one pass in order)
  mix        several datasets in one training, each face with the points it has

``builders`` imports TensorFlow-Datasets; it is loaded only when a dataset is
opened, so crops and batches of in-memory records need no TFDS.
"""

from jaxmarks.data.config import get_data_config, check_data_config, settings  # noqa: F401
from jaxmarks.data.crop import (  # noqa: F401
    box_of_record,
    box_points_known,
    crop_face,
    crop_transform,
    mean_shape_in_crop,
    normalize_image,
    process_record,
)
from jaxmarks.data.loader import make_loader, parse_flags_with_defaults  # noqa: F401
from jaxmarks.data.mix import mix_label_schemes  # noqa: F401
from jaxmarks.data.mix import parts as mix_parts  # noqa: F401
from jaxmarks.data.splits import (  # noqa: F401
    IndexedSource,
    decode_image,
    holdout_mask,
    load_split,
    parse_split,
    split_indices,
)
