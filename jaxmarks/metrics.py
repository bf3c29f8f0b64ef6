"""Landmark error metrics: NME under named normalisations, CED, AUC, failure rate.

Definitions follow DAN's evaluation code (Kowalski et al. 2017) and menpofit:
the NME of one face is the mean point-to-point error divided by a normalising
distance; the CED is the fraction of faces with NME <= t; AUC integrates the CED
from 0 to the threshold (Simpson's rule on a grid of step 1e-4, as in DAN) and
divides by the threshold; the failure rate is the fraction with NME > threshold.
A non-finite error (a NaN or infinite prediction) is a failure everywhere: it is
never <= a CED threshold and always counts in the failure rate.
The summary of an evaluation (every normalisation, AUC, failure rate, per-stage
errors) is ``jaxmarks.evaluation.summarize``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmarks import schemes as schemes_lib
from jaxmarks import shapes as shapes_lib

__all__ = [
    "NORMALIZATIONS",
    "normalizing_distance",
    "nme",
    "labelled_nme",
    "labelled_cross_entropy",
    "ced",
    "auc",
    "failure_rate",
]

NORMALIZATIONS = ("inter_ocular", "inter_pupil", "bbox_diagonal", "bbox_size")


def normalizing_distance(gt, scheme="ibug68", normalization: str = "inter_ocular"):
  """The per-face normalising distance ``(...)`` of ground-truth ``(..., K, 2)`` shapes.

  - ``inter_ocular``: distance between the scheme's outer eye corners.
  - ``inter_pupil``: distance between the eye centres (mean of each eye's points,
    or the annotated pupils where the scheme has them).
  - ``bbox_diagonal``: diagonal of the ground-truth landmark box.
  - ``bbox_size``: ``sqrt(width * height)`` of that box.
  """
  gt = jnp.asarray(gt)
  if normalization in ("inter_ocular", "inter_pupil"):
    s = schemes_lib.get_scheme(scheme)
    shapes_lib.check_shape(gt, s.num_points, name="ground truth")
    if normalization == "inter_ocular":
      a, b = s.outer_eye_corners
      p, q = gt[..., a, :], gt[..., b, :]
    else:
      p = gt[..., list(s.left_eye), :].mean(axis=-2)
      q = gt[..., list(s.right_eye), :].mean(axis=-2)
    return jnp.linalg.norm(p - q, axis=-1)
  if normalization in ("bbox_diagonal", "bbox_size"):
    box = shapes_lib.landmark_box(gt)
    wh = box[..., 2:4] - box[..., 0:2]
    if normalization == "bbox_diagonal":
      return jnp.linalg.norm(wh, axis=-1)
    return jnp.sqrt(wh[..., 0] * wh[..., 1])
  raise ValueError(
      f"unknown normalization {normalization!r}; expected one of {', '.join(NORMALIZATIONS)}"
  )


def _point_distance(pred, gt):
  """``(..., K)`` Euclidean distances of ``(..., K, 2)`` points, with a zero (not NaN)
  gradient where a point is exactly on its target (``jnp.linalg.norm``'s is NaN there)."""
  sq = jnp.sum(jnp.square(pred - gt), axis=-1)
  on = sq != 0  # NaN and inf stay as they are (evaluation counts them)
  return jnp.where(on, jnp.sqrt(jnp.where(on, sq, 1.0)), 0.0)


def nme(pred, gt, scheme="ibug68", normalization: str = "inter_ocular", visible=None):
  """Normalised mean error per face.

  Args:
    pred: ``(B, K, 2)`` predicted landmarks (any leading batch shape).
    gt: ``(B, K, 2)`` ground truth, same units.
    scheme: scheme name or ``Scheme`` (needed for the eye-based normalisations).
    normalization: one of ``NORMALIZATIONS``.
    visible: optional ``(B, K)`` mask; the mean then runs over visible points only.

  Returns:
    ``(B,)`` errors (fractions of the normalising distance, not percent).
  """
  pred = jnp.asarray(pred)
  gt = jnp.asarray(gt)
  if pred.shape != gt.shape:
    raise ValueError(f"pred shape {pred.shape} does not match ground truth shape {gt.shape}")
  dist = _point_distance(pred, gt)  # (B, K)
  if visible is None:
    per_face = dist.mean(axis=-1)
  else:
    v = jnp.asarray(visible, dist.dtype)
    per_face = (dist * v).sum(-1) / jnp.maximum(v.sum(-1), 1.0)
  return per_face / normalizing_distance(gt, scheme, normalization)


def _far_shape(k: int):
  """``(K, 2)`` points on a circle of radius 1e4 about the origin: a stand-in ground truth
  that no prediction reaches, so that a face's unused branch of ``labelled_nme`` has
  finite values and gradients (a zero distance or normaliser would give NaN ones)."""
  angle = jnp.arange(k, dtype=jnp.float32) * (2 * jnp.pi / max(k, 1))
  return 1e4 * jnp.stack([jnp.cos(angle), jnp.sin(angle)], -1)


def labelled_nme(pred, batch, scheme: str, normalization: str = "inter_ocular",
                 label_schemes=()):
  """Per-face NME ``(B,)`` of ``(B, K, 2)`` predictions in ``scheme`` against the points
  each face has (``jaxmarks.data.mix``): a face whose ``batch["label_scheme"]`` is
  ``j > 0`` has the ``k`` points of ``label_schemes[j]`` in ``batch["landmarks"][:, :k]``,
  and is scored on the prediction converted to that scheme, normalised as that
  scheme's NME is (MTFL's five points: the eye-centre distance). Without
  ``label_scheme`` in the batch (one dataset) it is ``nme``. Jittable; the branches a
  face does not use are computed on stand-in points, so their gradients are finite.
  """
  gt = batch["landmarks"]
  if "label_scheme" not in batch or len(label_schemes) < 2:
    return nme(pred, gt, scheme, normalization)
  if label_schemes[0] != scheme:
    raise ValueError(f"label_schemes must start with the predicted scheme {scheme!r}; "
                     f"got {tuple(label_schemes)}")
  which = jnp.asarray(batch["label_scheme"])
  out = jnp.zeros(which.shape, jnp.float32)
  for j, s in enumerate(label_schemes):
    k = schemes_lib.get_scheme(s).num_points
    here = (which == j)[:, None, None]
    target = jnp.where(here, gt[:, :k], _far_shape(k))
    err = nme(schemes_lib.convert(pred, scheme, s), target, s, normalization)
    out = jnp.where(which == j, err, out)
  return out


def labelled_cross_entropy(logits, labels):
  """``(mean softmax cross-entropy, accuracy, count)`` of ``(B, C)`` logits over the faces
  whose ``(B,)`` integer labels are >= 0 (``-1``: the face's dataset has no such label,
  ``jaxmarks.data.mix``); zeros, and zero gradients, when none is labelled."""
  labels = jnp.asarray(labels)
  known = labels >= 0
  logp = jax.nn.log_softmax(logits, axis=-1)
  ce = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
  count = known.sum()
  denom = jnp.maximum(count, 1)
  right = (jnp.argmax(logits, -1) == labels) & known
  return jnp.where(known, ce, 0.0).sum() / denom, right.sum() / denom, count


def ced(errors, thresholds):
  """Cumulative error distribution: fraction of ``(N,)`` errors <= each of ``(T,)`` thresholds."""
  errors = jnp.asarray(errors)
  thresholds = jnp.asarray(thresholds)
  return jnp.mean(errors[None, :] <= thresholds[:, None], axis=1)


def _simpson(y, x):
  """Composite Simpson's rule on an evenly spaced grid (odd number of samples)."""
  h = x[1] - x[0]
  n = y.shape[0]
  if n % 2 == 0:  # fall back to trapezoid on the last interval
    return _simpson(y[:-1], x[:-1]) + (y[-1] + y[-2]) * h / 2
  return h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())


def auc(errors, threshold: float = 0.08, step: float = 1e-4):
  """Area under the CED from 0 to ``threshold``, divided by ``threshold`` (in [0, 1])."""
  num = int(round(threshold / step)) + 1
  xs = jnp.linspace(0.0, threshold, num)
  return _simpson(ced(errors, xs), xs) / threshold


def failure_rate(errors, threshold: float = 0.08):
  """Fraction of ``(N,)`` errors strictly above ``threshold`` or not finite (NaN, inf).

  The complement of ``ced`` at ``threshold``: a NaN error is a failure here as it is
  never a success in the CED and the AUC.
  """
  return jnp.mean(~(jnp.asarray(errors) <= threshold))
