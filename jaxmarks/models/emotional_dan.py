"""EmotionalDAN: landmarks and a facial-expression class from one network.

Tautkute, Trzcinski and Bielski, "I Know How You Feel: Emotion Recognition with
Facial Landmarks", CVPR Workshops 2018 (extended as "Classifying and Visualizing
Emotions with Emotional DAN", arXiv 1810.10529): DAN (``jaxmarks.models.dan``) with
one dense layer of ``num_classes`` outputs on the last stage's first fully
connected layer (the ``fc_units`` features that also give that stage's landmarks),
so that the classifier learns from the features that locate the face's points.
Training is DAN's, stage by stage: stage 1 on the landmarks alone, then the last
stage on the joint loss with the earlier stages frozen::

  loss = landmark_weight * NME + class_weight * softmax cross-entropy

The NME is each face's on the points its dataset has (``metrics.labelled_nme``:
300-W's 68, MTFL's five), so 300-W's landmarks and MTFL's expression labels train
together (``config.data.mix``); a face without a label (``-1``: a 300-W face has no
smile label) adds nothing to the cross-entropy, which is averaged over the labelled
faces of the batch. The prediction adds ``probabilities`` ``(B, num_classes)``.

Where this departs from the authors' code, and why:

- The labels: the papers train 7/8 expression classes on AffectNet, which is not in
  the shared data; here the expression is MTFL's ``smile`` attribute (2 classes,
  ``config.emotion``), the one real expression label the project has. The class
  count and names are settings.
- The landmark term is DAN's inter-ocular NME (``model.loss_normalization``) where
  the authors use the eye-centre distance; the optimiser is the DAN configs' Adam
  with its cosine schedule rather than SGD with a cyclic learning rate, so that the
  comparison with DAN trained on the same schedule changes only the branch.
- The CPU variant weighs the cross-entropy 0.1 against the NME's 1 (the paper: 0.5
  and 0.5, the ``paper`` variant): a smile is told apart from few features, and the
  landmarks, which the short schedule barely fits, keep most of the gradient.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import ml_collections

from jaxmarks import metrics as metrics_lib
from jaxmarks import validate
from jaxmarks.drivers import deep
from jaxmarks.models import dan

__all__ = ["EmotionalDAN", "build_model", "loss_fn_for", "stage_phases", "UNIT"]

HEAD = "emotion"


class EmotionalDAN(dan.DAN):
  """DAN with an expression classifier on the last active stage's fc1 features.

  Attributes (beyond ``dan.DAN``'s):
    num_classes: expression classes.
  """

  num_classes: int = 2

  @nn.compact
  def __call__(self, images, *, active_stages: int | None = None, train: bool = False):
    """``dan.DAN.__call__``'s dict with ``logits`` and ``probabilities``
    ``(B, num_classes)``."""
    out = self.run_stages(images, active_stages, train)
    logits = nn.Dense(self.num_classes, name=HEAD)(out["features"])
    return {"landmarks": out["landmarks"], "stages": out["stages"], "logits": logits,
            "probabilities": jax.nn.softmax(logits, axis=-1)}


def build_model(config: ml_collections.ConfigDict, mean_shape) -> EmotionalDAN:
  """An ``EmotionalDAN`` from ``config.model`` / ``config.emotion`` and a mean shape."""
  base = dan.build_model(config.model, mean_shape)
  fields = {f: getattr(base, f) for f in ("mean_shape", "num_stages", "image_size",
                                         "base_width", "fc_units", "dropout_rate",
                                         "heatmap_half_size", "feature_size",
                                         "output_scale")}
  return EmotionalDAN(**fields, num_classes=len(config.emotion.class_names))


def _owned(model: EmotionalDAN, stage: int) -> set[str]:
  owned = {f"stage{stage}", f"feature_image{stage}", f"input_bn{stage}"}
  return owned | ({HEAD} if stage == model.num_stages else set())


def class_loss(logits, labels):
  """``(cross-entropy, accuracy, count)`` over the faces whose ``labels`` ``(B,)`` are
  >= 0 (``-1``: no label; ``metrics.labelled_cross_entropy``)."""
  return metrics_lib.labelled_cross_entropy(logits, labels)


def loss_fn_for(model: EmotionalDAN, scheme: str, stage: int, normalization: str,
                label_schemes: Sequence[str], feature: str, landmark_weight: float,
                class_weight: float):
  """The trainer's ``loss_fn`` of stage ``stage``: DAN's landmark loss, and on the last
  stage the weighted joint loss with the classifier's cross-entropy on
  ``batch[feature]``."""
  owned = _owned(model, stage)
  joint = stage == model.num_stages

  def loss_fn(params, model_state, batch, rng):
    params = {k: (v if k in owned else jax.lax.stop_gradient(v)) for k, v in params.items()}
    out, new_state = model.apply({"params": params, **model_state}, batch["image"],
                                 active_stages=stage, train=True, rngs={"dropout": rng},
                                 mutable=["batch_stats"])
    nme = metrics_lib.labelled_nme(out["landmarks"], batch, scheme, normalization,
                                   tuple(label_schemes)).mean()
    logs = {f"nme_{normalization}": nme}
    loss = nme
    if joint:
      ce, accuracy, count = class_loss(out["logits"], batch[feature])
      loss = landmark_weight * nme + class_weight * ce
      logs.update({"cross_entropy": ce, "accuracy": accuracy, "labelled": count})
    return loss, ({**model_state, **new_state}, logs)

  return loss_fn


def stage_phases(model: EmotionalDAN, config: ml_collections.ConfigDict, scheme: str,
                 optimizer_fn):
  """DAN's stage-wise phases (``dan.stage_phases``) with the joint loss on the last
  stage, which also trains the classifier."""
  e = config.emotion
  normalization = config.model.loss_normalization
  label_schemes = tuple(config.get("label_schemes", ()))
  return dan.stage_phases(
      model, scheme, list(config.train.steps_per_stage), optimizer_fn, normalization,
      label_schemes, owned=functools.partial(_owned, model),
      loss_for=lambda stage: loss_fn_for(model, scheme, stage, normalization, label_schemes,
                                         e.feature, float(e.landmark_weight),
                                         float(e.class_weight)))


def _check_config(config: ml_collections.ConfigDict) -> None:
  dan._check_config(config)  # pylint: disable=protected-access
  e = config.emotion
  if len(e.class_names) < 2:
    raise ValueError(f"config.emotion.class_names must name at least 2 classes; got "
                     f"{tuple(e.class_names)}")
  if e.feature not in tuple(config.data.extra_features):
    raise ValueError(f"config.emotion.feature={e.feature!r} must be one of "
                     f"config.data.extra_features {tuple(config.data.extra_features)}, so "
                     "that the batches carry its labels")
  validate.check_float(config, "emotion.landmark_weight", 0.0)
  validate.check_float(config, "emotion.class_weight", 0.0, low_open=True)


def _describe(model: EmotionalDAN, config: ml_collections.ConfigDict, n_params: int) -> str:
  return (f"EmotionalDAN: {model.num_stages} stages, base width {model.base_width}, "
          f"{model.num_classes} classes ({', '.join(config.emotion.class_names)}) from "
          f"{config.emotion.feature!r}, {n_params / 1e6:.2f} M parameters; steps per stage "
          f"{list(config.train.steps_per_stage)}")


METHOD = deep.DeepMethod(
    name="emotional_dan",
    paper=("Tautkute, Trzcinski and Bielski, I Know How You Feel: Emotion Recognition with "
           "Facial Landmarks, CVPR Workshops 2018"),
    config_file="configs/emotional_dan.py",
    build_model=build_model,
    init_variables=lambda model, rng: dan.init_variables(model, rng),
    phases=stage_phases,
    # DAN's inference function returns the whole output dict, probabilities included.
    inference_fn=lambda model, phase_index: dan.apply_fn_for(model, phase_index + 1),
    resume_keys=dan._RESUME_KEYS + ("emotion.class_names",),  # pylint: disable=protected-access
    check_config=_check_config,
    describe=_describe,
    partial_labels=True,
)
UNIT = deep.unit(METHOD)
