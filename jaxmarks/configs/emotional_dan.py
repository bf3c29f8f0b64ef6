"""EmotionalDAN configs (ml_collections): ``get_config(variant)``.

Variants (``--config=jaxmarks/configs/emotional_dan.py:<variant>``):

- ``""`` / ``"smile_cpu"`` (default): smiling / not smiling from MTFL's ``smile`` label,
  on the bundled ``dan-300w``. Its two landmark stages start from ``dan-300w``
  (``train.init_from``) and take 0 steps; the classifier has its own stage
  (``emotion.head="stage"``, DAN's stage network of base width 16 on the face aligned
  by the final landmarks, their heatmap and stage 2's feature image), trained 2,000
  steps on MTFL's ``train:fit`` faces (``data.mix``, weight 1 against 300-W's 0.1). The
  landmarks are ``dan-300w``'s exactly. About 25 minutes on a 2-core CPU; needs no
  pseudo-labels.
- ``"smile_cpu_fc1"``: the paper's head (one dense layer on stage 2's fc1, the
  features that also give the landmarks) on DAN's ``300w_cpu`` network and schedule from
  scratch, 300-W ``train:fit`` mixed with MTFL's pseudo-labelled faces
  (``mtfl_pseudo68``, weight 0.5; ``python -m experiments.pseudo_labels`` first);
  cross-entropy weight 0.1. About 40 minutes.
- ``"paper"``: the paper's head and weights (0.5 NME + 0.5 cross-entropy) on DAN's
  full-width ``300w`` network and schedule, for a GPU.

Validated on 300-W ``train:holdout`` (landmarks); the smile accuracy is measured on
MTFL ``train:holdout`` (``python -m benchmarks.smile``). The class names and the label
they come from are ``config.emotion``; the weights of the joint loss
``config.emotion.landmark_weight`` / ``class_weight``.
"""

import ml_collections

from jaxmarks.configs import dan

VARIANTS = ("smile_cpu", "smile_cpu_fc1", "paper")


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
  c.emotion.head = "fc1"  # the paper's; "stage": the classifier's own stage
  c.emotion.head_width = 0  # the expression stage's base width (0: the model's)
  c.emotion.steps = 0  # the expression stage's steps (head "stage")
  if variant == "smile_cpu":
    c.train.init_from = "dan-300w"
    c.train.steps_per_stage = (0, 0)
    c.emotion.head = "stage"
    c.emotion.head_width = 16  # twice the landmark stages' (8: less accurate, BENCHMARKS.md)
    c.emotion.steps = 2000
    c.emotion.class_weight = 1.0
    c.data.mix = ("mtfl=1",)
    c.data.main_weight = 0.1  # 300-W's faces carry no smile label
  elif variant == "paper":
    c.emotion.landmark_weight = 0.5
    c.emotion.class_weight = 0.5
  return c
