"""TCNN, the tweaked convolutional neural network (Wu, Hassner, Kim, Medioni and
Natarajan, "Facial Landmark Detection with Tweaked Convolutional Neural Networks",
TPAMI 2017).

**Vanilla CNN.** 40x40 grey faces; VALID convolutions 5x5x16, 3x3x48, 3x3x64 and
2x2x64, 2x2 max pooling after the first three, the absolute-value-rectified tanh
after each; FC5 with 100 units (abs-tanh); FC6 to the 2K landmark coordinates.
It is the network of TCDCN (``jaxmarks.models.tcdcn.TCDCN``) without auxiliary
heads, so that module is reused as it is.

**The tweak.** The paper observes that FC5's features cluster faces by pose,
expression and other modes of variation. After the vanilla network is trained, the
training faces' FC5 features are clustered by a Gaussian mixture (``jaxmarks.gmm``,
EM in JAX; K = 64 in the paper, ``config.tcnn.num_clusters``), one FC6 per cluster
is fitted on that cluster's faces, and at test time each face is routed to the FC6
of its most probable cluster. The convolutions and FC5 are shared and unchanged.

Where this departs from the paper, and why:

- Each cluster's FC6 is fitted in closed form, not fine-tuned by SGD: with the
  features fixed, FC6 is linear and the loss is least squares, so ridge regression
  towards the vanilla FC6 (``min sum_i w_i |f_i W + b - y_i|^2 + lambda |[W; b] -
  [W0; b0]|^2``, ``lambda`` = ``config.tcnn.ridge``) is the exact minimiser of what
  the paper's fine-tuning, started at the vanilla FC6 and stopped early, approaches.
  It takes seconds on a CPU and leaves small clusters near the vanilla FC6 instead
  of overfitting them. ``w_i`` is one over the face's squared inter-ocular distance,
  so the objective is the squared form of the NME the vanilla network is trained on.
- The paper's alignment-based augmentation inside each cluster (new training faces
  warped by the cluster's mean alignment) is left out: the closed-form fit on the
  un-augmented training crops plus the ridge term stands in for it.
- The vanilla network is trained as TCDCN's landmarks are (NME loss on offsets from
  the mean shape, Adam with a cosine schedule; see ``jaxmarks.models.tcdcn``), not
  with the paper's SGD on raw coordinates.
- Crops come from the landmarks' box (MTFL has no face boxes; the 300-W variant
  uses the same box as every other method here), not a detector's.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmarks import gmm as gmm_lib
from jaxmarks import metrics as metrics_lib
from jaxmarks.drivers import deep
from jaxmarks import export as export_lib
from jaxmarks import validate
from jaxmarks.models import tcdcn
from jaxmarks.train import trainer as trainer_lib

__all__ = ["TCNN", "build_model", "init_variables", "tweak_state", "fit_tweak", "tweaked_landmarks",
           "METHOD", "UNIT"]


class TCNN(tcdcn.TCDCN):
  """The vanilla CNN (TCDCN's network, built with no auxiliary tasks); ``num_clusters``
  sizes the tweak's arrays in the model state."""

  num_clusters: int = 1


def build_model(config: ml_collections.ConfigDict, mean_shape) -> TCNN:
  """The vanilla CNN of ``config.model`` and ``config.tcnn.num_clusters``."""
  m = config.model
  ms = tuple(tuple(float(c) for c in p) for p in np.asarray(mean_shape, np.float64))
  return TCNN(mean_shape=ms, tasks=(), image_size=int(m.image_size),
              widths=tuple(m.widths), kernels=tuple(m.kernels), fc_units=int(m.fc_units),
              output_scale=float(m.output_scale),
              num_clusters=int(config.tcnn.num_clusters))


def tweak_state(num_clusters: int, num_features: int, num_outputs: int
                ) -> dict[str, jax.Array]:
  """The tweak's arrays (``model_state["tweak"]``), empty until ``fit_tweak``:
  the mixture (``means``/``variances`` (M, F), ``log_weights`` (M,)) and the
  per-cluster FC6 (``kernels`` (M, F, 2K), ``biases`` (M, 2K))."""
  m, f, o = num_clusters, num_features, num_outputs
  return {"means": jnp.zeros((m, f), jnp.float32),
          "variances": jnp.ones((m, f), jnp.float32),
          "log_weights": jnp.full((m,), -np.log(m), jnp.float32),
          "kernels": jnp.zeros((m, f, o), jnp.float32),
          "biases": jnp.zeros((m, o), jnp.float32)}


def init_variables(model: TCNN, rng):
  """``(params, {"tweak": tweak_state})``."""
  params, _ = tcdcn.init_variables(model, rng)  # the same network, no auxiliary tasks
  return params, {"tweak": tweak_state(model.num_clusters, model.fc_units,
                                       2 * len(model.mean_shape))}


def _offset_targets(model: TCNN, landmarks) -> jax.Array:
  """``(B, 2K)``: what FC6 should output for ``(B, K, 2)`` landmarks."""
  mean = jnp.asarray(model.mean_shape, jnp.float32)[None]
  return ((landmarks - mean) / model.output_scale).reshape(landmarks.shape[0], -1)


def tweaked_landmarks(model: TCNN, tweak: dict[str, jax.Array], features
                      ) -> tuple[jax.Array, jax.Array]:
  """Routes ``(B, F)`` FC5 features to their clusters' FC6.

  Returns:
    ``(landmarks (B, K, 2) crop pixels, clusters (B,) int32)``.
  """
  mixture = gmm_lib.GMM(tweak["means"], tweak["variances"], tweak["log_weights"])
  clusters = gmm_lib.assign(mixture, features)
  offsets = (jnp.einsum("bf,bfo->bo", features, tweak["kernels"][clusters])
             + tweak["biases"][clusters])
  k = len(model.mean_shape)
  mean = jnp.asarray(model.mean_shape, jnp.float32)[None]
  return mean + model.output_scale * offsets.reshape(-1, k, 2), clusters


def fit_tweak(key, features, targets, weights, fc6_kernel, fc6_bias, num_clusters: int,
              ridge: float, em_iters: int = 50) -> tuple[dict[str, jax.Array], jax.Array]:
  """Clusters ``features (N, F)`` and fits one FC6 per cluster.

  Args:
    key: PRNG key of the mixture's seeding.
    features: ``(N, F)`` FC5 features of the training faces.
    targets: ``(N, 2K)`` FC6 outputs that would give their landmarks exactly.
    weights: ``(N,)`` per-face weights (one over the squared inter-ocular distance).
    fc6_kernel, fc6_bias: the vanilla FC6, ``(F, 2K)`` and ``(2K,)``.
    num_clusters: M (static).
    ridge: ``lambda`` of the pull towards the vanilla FC6.
    em_iters: EM iterations (static).

  Returns:
    ``(tweak, counts (M,))``: the ``tweak_state`` arrays and each cluster's faces.
  """
  features = jnp.asarray(features, jnp.float32)
  mixture = gmm_lib.fit(key, features, num_clusters, em_iters)
  clusters = gmm_lib.assign(mixture, features)
  onehot = jax.nn.one_hot(clusters, num_clusters) * weights[:, None]  # (N, M)
  a = jnp.concatenate([features, jnp.ones((features.shape[0], 1))], axis=1)  # (N, F+1)
  w0 = jnp.concatenate([fc6_kernel, fc6_bias[None]], axis=0)  # (F+1, 2K)
  # Normalised so that ``ridge`` means the same whatever the weights' scale.
  scale = jnp.mean(weights)
  gram = jnp.einsum("nm,nf,ng->mfg", onehot, a, a) / scale  # (M, F+1, F+1)
  rhs = jnp.einsum("nm,nf,no->mfo", onehot, a, targets) / scale  # (M, F+1, 2K)
  eye = jnp.eye(a.shape[1])
  heads = jnp.linalg.solve(gram + ridge * eye[None], rhs + ridge * w0[None])
  tweak = {"means": mixture.means, "variances": mixture.variances,
           "log_weights": mixture.log_weights, "kernels": heads[:, :-1], "biases": heads[:, -1]}
  return tweak, jnp.bincount(clusters, length=num_clusters)


def _finish(model, config, arrays, info, train_faces: Callable, log):
  """The tweak after the vanilla training (``DeepMethod.finish``)."""
  variables = export_lib.unflatten(arrays)
  params = jax.tree.map(jnp.asarray, variables["params"])
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x)["features"])
  scheme = str(config.scheme)
  feats, targets, weights = [], [], []
  for batch in train_faces():
    mask = np.asarray(batch.get("mask", np.ones(len(batch["image"]), bool)), bool)
    lm = np.asarray(batch["landmarks"], np.float32)[mask]
    feats.append(np.asarray(apply(params, np.asarray(batch["image"], np.float32)))[mask])
    targets.append(np.asarray(_offset_targets(model, jnp.asarray(lm))))
    iod = np.asarray(metrics_lib.normalizing_distance(lm, scheme, "inter_ocular"))
    weights.append(1.0 / np.maximum(iod, 1e-3) ** 2)
  feats, targets = np.concatenate(feats), np.concatenate(targets)
  weights = np.concatenate(weights).astype(np.float32)
  m = int(config.tcnn.num_clusters)
  tweak, counts = jax.jit(fit_tweak, static_argnums=(6, 8))(
      jax.random.PRNGKey(int(config.seed) + 1), feats, targets, weights,
      params["landmarks"]["kernel"], params["landmarks"]["bias"], m,
      float(config.tcnn.ridge), int(config.tcnn.em_iters))
  counts = np.asarray(counts)
  log(f"TCNN tweak: {m} clusters of the FC5 features of {len(feats)} training faces "
      f"(faces per cluster: min {counts.min()}, median {int(np.median(counts))}, max "
      f"{counts.max()}); one FC6 per cluster, ridge {float(config.tcnn.ridge):g} towards "
      "the vanilla FC6")
  out = dict(arrays)
  out.update(export_lib.flatten({"model_state": {"tweak": jax.device_get(tweak)}}))
  return out, dict(info, phase=1, phase_name="tweaked")


# ----------------------------------------------------------------------------- the method unit


def _phases(model, config: ml_collections.ConfigDict, scheme: str, optimizer_fn):
  def loss_fn(params, model_state, batch, rng):
    del rng
    out = model.apply({"params": params}, batch["image"], train=True)
    nme = metrics_lib.nme(out["landmarks"], batch["landmarks"], scheme, "inter_ocular").mean()
    return nme, (model_state, {"nme_inter_ocular": nme})

  steps = int(config.train.num_steps)
  return [trainer_lib.Phase(
      name="vanilla", num_steps=steps, tx=optimizer_fn(steps, 0), loss_fn=loss_fn,
      predict_fn=lambda p, s, x: model.apply({"params": p}, x)["landmarks"])]


def _inference_fn(model, phase_index: int):
  """Phase 0: the vanilla CNN; phase 1 (after the tweak): each face's cluster's FC6."""

  def fn(params, model_state, images):
    out = model.apply({"params": params}, images)
    if phase_index == 0:
      return {"landmarks": out["landmarks"]}
    landmarks, clusters = tweaked_landmarks(model, model_state["tweak"], out["features"])
    return {"landmarks": landmarks, "clusters": clusters, "vanilla": out["landmarks"]}

  return fn


def _check_config(config: ml_collections.ConfigDict) -> None:
  tcdcn.check_network_config(config)
  validate.check_int(config, "tcnn.num_clusters", 1)
  validate.check_int(config, "tcnn.em_iters", 1)
  validate.check_float(config, "tcnn.ridge", 0.0, low_open=True)


METHOD = deep.DeepMethod(
    name="tcnn",
    paper=("Wu, Hassner, Kim, Medioni and Natarajan, Facial Landmark Detection with "
           "Tweaked Convolutional Neural Networks, TPAMI 2017"),
    config_file="configs/tcnn.py",
    build_model=build_model,
    init_variables=init_variables,
    phases=_phases,
    inference_fn=_inference_fn,
    resume_keys=("model.image_size", "model.widths", "model.kernels", "model.fc_units",
                 "tcnn.num_clusters", "train.num_steps"),
    check_config=_check_config,
    describe=lambda model, config, n: (
        f"TCNN: {len(model.mean_shape)} landmarks, {n / 1e3:.1f} k parameters, "
        f"{config.train.num_steps} steps, then {config.tcnn.num_clusters} clusters"),
    paper_speed="",
    finish=_finish,
    finish_names=("vanilla", "tweaked"),
)
UNIT = deep.unit(METHOD)
