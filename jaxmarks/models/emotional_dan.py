"""EmotionalDAN: landmarks and a facial-expression class from one network.

Tautkute, Trzcinski and Bielski, "I Know How You Feel: Emotion Recognition with
Facial Landmarks", CVPR Workshops 2018 (extended as "Classifying and Visualizing
Emotions with Emotional DAN", arXiv 1810.10529): DAN (``jaxmarks.models.dan``) with
an expression classifier. In the paper (``head="fc1"``) it is one dense layer of
``num_classes`` outputs on the last stage's first fully connected layer (the
``fc_units`` features that also give that stage's landmarks), so that the classifier
learns from the features that locate the face's points. Training is DAN's, stage by
stage: stage 1 on the landmarks alone, then the last stage on the joint loss with the
earlier stages frozen::

  loss = landmark_weight * NME + class_weight * softmax cross-entropy

The NME is each face's on the points its dataset has (``metrics.labelled_nme``:
300-W's 68, MTFL's five), so 300-W's landmarks and MTFL's expression labels train
together (``config.data.mix``); a face without a label (``-1``: a 300-W face has no
smile label) adds nothing to the cross-entropy, which is averaged over the labelled
faces of the batch. The prediction adds ``probabilities`` ``(B, num_classes)``.

``head="stage"`` gives the classifier a stage of its own after the landmark stages,
built as DAN builds a stage's input: the face warped so that the final landmarks lie
on the mean shape, their heatmap and the last stage's feature image, through DAN's
feed-forward stage network (``head_width``) whose fc1 features feed the dense layer.
It trains in a phase of its own (``config.emotion.steps``) with every landmark stage
frozen, so the landmarks are exactly those of the DAN it starts from.

Where this departs from the authors' code, and why:

- The labels: the papers train 7/8 expression classes on AffectNet, which is not in
  the shared data; here the expression is MTFL's ``smile`` attribute (2 classes,
  ``config.emotion``), the one real expression label the project has. The class
  count and names are settings.
- The CPU default (``smile_cpu``) uses ``head="stage"``. On the CPU widths (base
  width 8) the shared fc1 holds the landmarks and the smile badly at once: the
  paper's head costs landmark accuracy, the more the larger the cross-entropy weight
  (BENCHMARKS.md, EmotionalDAN's smile). The own stage keeps
  the paper's idea (the classifier sees the face through its landmarks: aligned by
  them, with their heatmap) without touching the landmark path.
- The landmark term is DAN's inter-ocular NME (``model.loss_normalization``) where
  the authors use the eye-centre distance; the optimiser is the DAN configs' Adam
  with its cosine schedule rather than SGD with a cyclic learning rate, so that the
  comparison with DAN trained on the same schedule changes only the branch.
- ``smile_cpu_fc1`` weighs the cross-entropy 0.1 against the NME's 1 (the paper: 0.5
  and 0.5, the ``paper`` variant): the landmarks, which the short schedule barely
  fits, keep most of the gradient.
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxmarks import metrics as metrics_lib
from jaxmarks import validate
from jaxmarks.drivers import deep
from jaxmarks.models import dan

__all__ = ["EmotionalDAN", "build_model", "loss_fn_for", "stage_phases", "UNIT"]

HEAD = "emotion"


class EmotionalDAN(dan.DAN):
  """DAN with an expression classifier.

  Attributes (beyond ``dan.DAN``'s):
    num_classes: expression classes.
    head: where the classifier reads its features. ``"fc1"`` (the paper): one dense
      layer on the last active stage's fc1 features, which also give that stage's
      landmarks. ``"stage"``: an expression stage after the landmark stages, built like
      a DAN stage (the face warped to the mean shape by the final landmarks, their
      heatmap and the last stage's feature image, through DAN's feed-forward net of
      ``head_width``) whose fc1 features feed the dense layer; it is active when
      ``active_stages == num_stages + 1`` (the landmark stages then run in inference
      mode).
    head_width: the expression stage's ``base_width`` (``head="stage"``).
  """

  num_classes: int = 2
  head: str = "fc1"
  head_width: int = 8

  @property
  def num_phases(self) -> int:
    """Trainer phases: one per landmark stage, and the expression stage's."""
    return self.num_stages + (self.head == "stage")

  @nn.compact
  def __call__(self, images, *, active_stages: int | None = None, train: bool = False):
    """``dan.DAN.__call__``'s dict with ``logits`` and ``probabilities``
    ``(B, num_classes)`` (``head="stage"`` with the expression stage inactive: uniform)."""
    n = self.num_phases if active_stages is None else int(active_stages)
    if self.head == "fc1":
      out = self.run_stages(images, n, train)
      logits = nn.Dense(self.num_classes, name=HEAD)(out["features"])
    elif self.head == "stage":
      if not 1 <= n <= self.num_stages + 1:
        raise ValueError(f"active_stages must be in [1, {self.num_stages + 1}]; got {n}")
      expression = n == self.num_stages + 1
      out = self.run_stages(images, min(n, self.num_stages), train and not expression)
      logits = jnp.zeros((images.shape[0], self.num_classes), jnp.float32)
      if expression or self.is_initializing():
        inp, _, _ = self.stage_input(out["standardized"], out["landmarks"], out["features"],
                                     f"_{HEAD}", train)
        _, fc1 = dan.DANStage(self.num_points, self.head_width, self.fc_units,
                              self.dropout_rate, 1.0, name=f"{HEAD}_stage")(inp, train)
        head_logits = nn.Dense(self.num_classes, name=HEAD)(fc1)
        logits = head_logits if expression else logits
    else:
      raise ValueError(f"EmotionalDAN head must be 'fc1' or 'stage'; got {self.head!r}")
    return {"landmarks": out["landmarks"], "stages": out["stages"], "logits": logits,
            "probabilities": jax.nn.softmax(logits, axis=-1)}


def build_model(config: ml_collections.ConfigDict, mean_shape) -> EmotionalDAN:
  """An ``EmotionalDAN`` from ``config.model`` / ``config.emotion`` and a mean shape."""
  base = dan.build_model(config.model, mean_shape)
  fields = {f: getattr(base, f) for f in ("mean_shape", "num_stages", "image_size",
                                         "base_width", "fc_units", "dropout_rate",
                                         "heatmap_half_size", "feature_size",
                                         "output_scale")}
  e = config.emotion
  return EmotionalDAN(**fields, num_classes=len(e.class_names), head=str(e.get("head", "fc1")),
                      head_width=int(e.get("head_width", 0) or base.base_width))


def _owned(model: EmotionalDAN, stage: int) -> set[str]:
  """The top-level parameters phase ``stage`` (1-based) trains."""
  if stage > model.num_stages:  # the expression stage
    return {HEAD, f"{HEAD}_stage", f"feature_image_{HEAD}", f"input_bn_{HEAD}"}
  owned = {f"stage{stage}", f"feature_image{stage}", f"input_bn{stage}"}
  return owned | ({HEAD} if stage == model.num_stages and model.head == "fc1" else set())


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
  joint = stage == model.num_phases

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
  phase, which also trains the classifier: the last landmark stage (``head="fc1"``),
  or the expression stage (``head="stage"``, ``config.emotion.steps``), with every
  landmark stage frozen."""
  e = config.emotion
  normalization = config.model.loss_normalization
  label_schemes = tuple(config.get("label_schemes", ()))
  steps = list(config.train.steps_per_stage)
  if model.head == "stage":
    steps.append(int(e.steps))
  return dan.stage_phases(
      model, scheme, steps, optimizer_fn, normalization,
      label_schemes, owned=functools.partial(_owned, model),
      loss_for=lambda stage: loss_fn_for(model, scheme, stage, normalization, label_schemes,
                                         e.feature, float(e.landmark_weight),
                                         float(e.class_weight)),
      names=[f"stage{i + 1}" for i in range(model.num_stages)] + [HEAD])


def _check_config(config: ml_collections.ConfigDict) -> None:
  e = config.emotion
  head = e.get("head", "fc1")
  if head not in ("fc1", "stage"):
    raise ValueError(f"config.emotion.head must be 'fc1' (the paper) or 'stage'; got {head!r}")
  expression_steps = 0
  if head == "stage":
    validate.check_int(config, "emotion.steps", 1)
    validate.check_int(config, "emotion.head_width", 0)
    expression_steps = int(e.steps)
  dan._check_config(config, extra_steps=expression_steps)  # pylint: disable=protected-access
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
  head = ("on the last stage's fc1" if model.head == "fc1" else
          f"on its own stage (width {model.head_width}, {int(config.emotion.steps)} steps)")
  return (f"EmotionalDAN: {model.num_stages} stages, base width {model.base_width}, "
          f"{model.num_classes} classes ({', '.join(config.emotion.class_names)}) from "
          f"{config.emotion.feature!r} {head}, {n_params / 1e6:.2f} M parameters; steps per "
          f"stage {list(config.train.steps_per_stage)}")


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
    resume_keys=dan._RESUME_KEYS + ("emotion.class_names", "emotion.head",
                                    "emotion.head_width"),  # pylint: disable=protected-access
    check_config=_check_config,
    describe=_describe,
    partial_labels=True,
    init_from_methods=("dan",),  # a trained DAN's stages, the classifier fresh
)
UNIT = deep.unit(METHOD)
