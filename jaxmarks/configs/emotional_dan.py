"""EmotionalDAN configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/emotional_dan.py:<variant>``):

- ``""`` / ``"smile_cpu"`` (default): DAN's ``300w_cpu`` network and schedule with the
  expression branch, trained on 300-W ``train:fit`` (68 points, no expression label)
  mixed with MTFL's ``train:fit`` faces that carry 68 pseudo-labelled points and
  MTFL's ``smile`` label (``mtfl_pseudo68``, weight 0.5, ``config.data.mix``; make it
  first with ``python -m experiments.pseudo_labels``): smiling / not smiling.
  Validated on 300-W ``train:holdout`` (landmarks); the smile accuracy is measured on
  MTFL ``train:holdout`` (``python -m benchmarks.smile``). About as long as
  ``dan:300w_cpu`` on a 2-core CPU. ``--config.data.mix='("mtfl=0.5",)'`` learns from
  MTFL's own five points instead.
- ``"paper"``: the paper's weights (0.5 NME + 0.5 cross-entropy) and DAN's full-width
  ``300w`` network and schedule, for a GPU.

The class names and the label they come from are ``config.emotion``; the weights of
the joint loss ``config.emotion.landmark_weight`` / ``class_weight``.
"""

import ml_collections

from jaxmarks.configs import dan

VARIANTS = ("smile_cpu", "paper")


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The config of a named variant (see the module docstring)."""
  variant = (variant or "smile_cpu").strip()
  if variant not in VARIANTS:
    raise ValueError(f"unknown EmotionalDAN config variant {variant!r}; known variants: "
                     f"{', '.join(VARIANTS)}")
  c = dan.get_config("300w" if variant == "paper" else "300w_cpu")
  c.method = "emotional_dan"
  c.variant = variant
  c.data.mix = ("mtfl_pseudo68@train=0.5",)
  c.data.extra_features = ("smile",)
  c.data.flip_feature_maps = ml_collections.ConfigDict()  # a mirrored smile is a smile
  c.emotion = ml_collections.ConfigDict()
  c.emotion.feature = "smile"
  c.emotion.class_names = ("smiling", "not_smiling")  # MTFL's smile labels 0 and 1
  c.emotion.landmark_weight = 1.0
  c.emotion.class_weight = 0.1
  if variant == "paper":
    c.emotion.landmark_weight = 0.5
    c.emotion.class_weight = 0.5
  return c
