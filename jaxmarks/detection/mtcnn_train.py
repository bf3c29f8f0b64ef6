"""Training MTCNN as the paper does: P-Net, then R-Net on P-Net's detections, then
O-Net on R-Net's (Zhang et al., IEEE SPL 2016, Sec. II-C and III-A).

**Samples** (``sample_windows``, ``mine_windows``, ``background_windows``): square
windows of the training photos, labelled by their IoU with the annotated face's
box: negatives < 0.3, part faces 0.4-0.65, positives > 0.65; positives also carry
the five landmarks (the paper's "landmark faces"); and negatives from face-free
synthetic backgrounds (the synthetic faces' renderer). P-Net's windows are drawn
at random (around the face and anywhere in the photo); R-Net's and O-Net's are the
previous stages' detections on the training photos (``MTCNNDetector.proposals``),
plus random windows so that each class has enough. Windows are cropped with zero padding outside the photo and
resized to the network's input (12, 24, 48) with area interpolation, like the
detector's crops.

**Face box**: the data has landmarks, not face boxes. The box is the square about
the landmark box of the face (brows to chin, ear to ear): the 68-point box for
300-W faces, and for MTFL's five points the 68-point box they most likely have
(``jaxmarks.shapes.landmark_box_from_points``). So the trained detector's boxes
are the boxes the 68-point landmark methods were trained on.

**Losses** (Sec. II-C): cross-entropy for face / non-face on negatives and
positives, squared error of the box offsets on positives and part faces, squared
error of the landmarks on landmark faces, weighted 1 / 0.5 / 0.5 (P-Net, R-Net) and
1 / 0.5 / 1 (O-Net); online hard example mining keeps the hardest 70 % of each
batch's classification losses.

Each network trains with the project's ``Trainer`` in ``<workdir>/<net>``
(checkpoints, resume, NaN guard, logs); its validation is the landmark NME of its
points head on positive windows of the validation faces, printed with its
normalisation. The windows of each stage are saved as ``<net>/samples.npz``
(NumPy arrays, no pickle), so a resumed run trains on the same samples.

**The paper's data** (the ``paper`` config): photos with several face boxes and no
landmarks (WIDER FACE: ``(image, boxes (M, 4), None, "boxes")``; windows labelled
by their best IoU over all the photo's faces, box targets from that face, no
landmark loss) and landmark-only faces (CelebA: ``(image, box, points,
"landmarks")``; windows with IoU > 0.65 labelled ``LANDMARK``, which teach the
five points only, as the paper's "landmark faces").

Departures from the paper: no WIDER FACE / CelebA in the default configs (the
photos of MTFL and 300-W, one annotated face each: other faces in a photo may
become negatives); Adam with a cosine schedule instead of SGD; every network has
a landmark head; windows are mirrored at random (with the five points swapped).
The default ``mtfl`` config cuts the O-Net's landmark faces from the same faces as
its detection windows (``per_face.landmarks``) and trains its landmarks with the
error over the eye-centre distance (``landmark_loss="nme"``) instead of the squared
error: both made its points markedly better (``docs/methods/mtcnn.md``).
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxmarks import schemes as schemes_lib
from jaxmarks import shapes
from jaxmarks.detection import boxes as box_lib
from jaxmarks.detection import mtcnn_detector
from jaxmarks.detection import mtcnn_nets as nets

__all__ = ["face_box", "sample_windows", "mine_windows", "loss_fn", "train_net", "NETS"]

NETS = ("pnet", "rnet", "onet")
# (classification, box, landmarks) loss weights, Sec. II-C of the paper.
TASK_WEIGHTS = {"pnet": (1.0, 0.5, 0.5), "rnet": (1.0, 0.5, 0.5), "onet": (1.0, 0.5, 1.0)}
NEG, POS, PART = 0, 1, 2
# A face window that only teaches the landmarks: the paper's "landmark faces" (CelebA
# crops), from faces whose box is not the detector's kind of box.
LANDMARK = 3


def face_box(landmarks: np.ndarray, scheme: str) -> np.ndarray:
  """The square face box ``(4,)`` (0-based pixel edges) of an annotated face."""
  lm = np.asarray(landmarks, np.float64)
  if scheme == "ibug68":
    box = shapes.landmark_box(lm)
  else:
    five = schemes_lib.convert(lm[None], scheme, "mtfl5")[0]
    box = shapes.landmark_box_from_points(five, "ibug68")
  c = (box[:2] + box[2:]) / 2
  side = max(box[2] - box[0], box[3] - box[1])
  return np.concatenate([c - side / 2, c + side / 2])


def _as_faces(box, points) -> tuple[np.ndarray, np.ndarray]:
  """A photo's faces as ``boxes (M, 4)`` and ``points (M, 5, 2)`` (NaN where a face
  has no landmarks, e.g. WIDER FACE's) from one face's ``(4,)``/``(5, 2)`` or many."""
  boxes = np.asarray(box, np.float64).reshape(-1, 4)
  if points is None:
    return boxes, np.full((len(boxes), 5, 2), np.nan)
  return boxes, np.asarray(points, np.float64).reshape(-1, 5, 2)


def _match(windows: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each window's best IoU ``(N,)`` over a photo's face boxes ``(M, 4)`` and the index
  ``(N,)`` of that face."""
  if not len(boxes):
    return np.zeros(len(windows)), np.zeros(len(windows), np.int64)
  ious = np.stack([box_lib.iou(b, windows) for b in boxes])
  return ious.max(0), ious.argmax(0)


def _targets(windows: np.ndarray, boxes: np.ndarray, points: np.ndarray):
  """Box offsets ``(N, 4)`` and landmarks ``(N, 5, 2)`` relative to square windows
  ``(N, 4)`` (pixel edges), in units of the window's side; each window's targets are
  those of the face it overlaps most (``boxes (M, 4)``, ``points (M, 5, 2)``)."""
  _, idx = _match(windows, boxes)
  side = (windows[:, 2] - windows[:, 0])[:, None]
  offsets = (boxes[idx] - windows) / side
  rel = (points[idx] - windows[:, None, :2]) / side[:, :, None]
  return offsets.astype(np.float32), rel.astype(np.float32)


def _crop(image: np.ndarray, windows: np.ndarray, size: int) -> np.ndarray:
  """uint8 crops ``(N, size, size, 3)`` of windows in pixel edges."""
  inclusive = np.stack([np.floor(windows[:, 0]) + 1, np.floor(windows[:, 1]) + 1,
                        np.floor(windows[:, 2]), np.floor(windows[:, 3])], axis=1)
  crops = box_lib.crop_resized(image, inclusive, size)
  return np.clip(np.round(crops), 0, 255).astype(np.uint8)


def _label(windows: np.ndarray, boxes: np.ndarray) -> np.ndarray:
  """Negative / part / positive by the best IoU with any face of the photo
  (``boxes (M, 4)`` or one ``(4,)``); -1 between the bands."""
  overlap, _ = _match(windows, np.asarray(boxes, np.float64).reshape(-1, 4))
  label = np.full(len(windows), -1, np.int64)
  label[overlap < 0.3] = NEG
  label[(overlap >= 0.4) & (overlap <= 0.65)] = PART
  label[overlap > 0.65] = POS
  return label


def _random_windows(rng: np.random.Generator, box: np.ndarray, shape, n_near: int,
                    n_far: int, min_side: int) -> np.ndarray:
  """Square windows near the faces (perturbed boxes; ``box (4,)`` or ``(M, 4)``: the
  near windows are shared among the faces) and anywhere in the photo."""
  boxes = np.asarray(box, np.float64).reshape(-1, 4)
  if len(boxes) > 1:
    share = -(-n_near // len(boxes))
    near = [_random_windows(rng, b, shape, share, 0, min_side) for b in boxes]
    far = _random_windows(rng, boxes[0], shape, 0, n_far, min_side)
    return np.concatenate(near + [far])
  box = boxes[0]
  h, w = shape[:2]
  side = box[2] - box[0]
  c = (box[:2] + box[2:]) / 2
  s = side * np.exp(rng.uniform(np.log(0.75), np.log(1.3), n_near))
  centres = c + rng.uniform(-0.3, 0.3, (n_near, 2)) * side
  near = np.concatenate([centres - s[:, None] / 2, centres + s[:, None] / 2], axis=1)
  s = rng.uniform(min_side, max(min_side + 1, min(h, w) / 2), n_far)
  x0 = rng.uniform(0, np.maximum(w - s, 1))
  y0 = rng.uniform(0, np.maximum(h - s, 1))
  far = np.stack([x0, y0, x0 + s, y0 + s], axis=1)
  return np.concatenate([near, far])


def _take(rng, windows, labels, quotas: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
  keep = []
  for label, quota in quotas.items():
    idx = np.flatnonzero(labels == label)
    if len(idx) > quota:
      idx = rng.choice(idx, quota, replace=False)
    keep.append(idx)
  keep = np.concatenate(keep).astype(np.int64)
  return windows[keep], labels[keep]


def _pack(image, windows, labels, box, points, size) -> dict[str, np.ndarray]:
  offsets, rel = _targets(windows, *_as_faces(box, points))
  return {"image": _crop(image, windows, size), "label": labels.astype(np.int32),
          "box": offsets, "landmarks": rel}


def _concat(parts: list[dict[str, np.ndarray]], size: int) -> dict[str, np.ndarray]:
  if not parts:
    return {"image": np.zeros((0, size, size, 3), np.uint8), "label": np.zeros(0, np.int32),
            "box": np.zeros((0, 4), np.float32), "landmarks": np.zeros((0, 5, 2), np.float32)}
  return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _landmark_windows(rng, image, box, points, n: int, size: int) -> dict[str, np.ndarray]:
  """``n`` windows around a landmark-only face, IoU > 0.65 with its box, labelled
  ``LANDMARK`` (the paper's landmark faces: they teach the five points only)."""
  windows = _random_windows(rng, box, image.shape, 12 * n + 8, 0, min_side=12)
  windows = windows[box_lib.iou(np.asarray(box, np.float64), windows) > 0.65][:n]
  return _pack(image, windows, np.full(len(windows), LANDMARK), box, points, size)


def _extra_landmark_windows(seed: int, k: int, image, box, points, per_face,
                            size: int) -> list[dict[str, np.ndarray]]:
  """``per_face.landmarks`` landmark-face windows of a face that has a box and five
  points (role ``"both"``, e.g. MTFL's), beside its detection windows: the paper's
  landmark faces for data without a separate landmark set. Drawn from their own
  random stream (``[seed, k, 1]``), so the other windows do not change."""
  n = int(per_face.get("landmarks", 0))
  if n <= 0 or points is None:
    return []
  return [_landmark_windows(np.random.default_rng([seed, k, 1]), image, box, points, n, size)]


def _unpack(face) -> tuple[np.ndarray, Any, Any, str]:
  """A face record ``(image, box, points[, role])``; role ``"both"`` (default: a
  face box of the detector's kind and five points), ``"boxes"`` (face boxes only;
  ``box (M, 4)``, points None) or ``"landmarks"`` (five points only: landmark faces)."""
  image, box, points, *role = face
  role = role[0] if role else "both"
  if role not in ("both", "boxes", "landmarks"):
    raise ValueError(f"face role must be 'both', 'boxes' or 'landmarks'; got {role!r}")
  return image, box, points, role


def sample_windows(faces, size: int, per_face: ml_collections.ConfigDict,
                   seed: int) -> dict[str, np.ndarray]:
  """Random training windows of every face (P-Net's samples, and the extra
  positives and part faces of the later stages).

  Args:
    faces: iterable of ``(image (H, W, 3) uint8, box (4,), points (5, 2))`` — or
      ``(image, boxes (M, 4), None, "boxes")`` for a photo of several faces with
      boxes only (WIDER FACE), ``(image, box, points, "landmarks")`` for a
      landmark-only face (CelebA: ``per_face.landmarks`` windows labelled
      ``LANDMARK``).
    size: the network's input side.
    per_face: ``negatives``, ``positives``, ``parts`` (and ``landmarks``): windows
      per face.
    seed: sampling seed.

  Returns:
    ``image (N, size, size, 3) uint8``, ``label (N,)`` (0 negative, 1 positive,
    2 part, 3 landmark face), ``box (N, 4)`` and ``landmarks (N, 5, 2)`` targets
    (NaN where the face has no landmarks).
  """
  parts = []
  for k, face in enumerate(faces):
    image, box, points, role = _unpack(face)
    rng = np.random.default_rng([seed, k])
    if role == "landmarks":
      parts.append(_landmark_windows(rng, image, box, points,
                                     int(per_face.get("landmarks", 0)), size))
      continue
    quotas = {NEG: int(per_face.negatives), POS: int(per_face.positives),
              PART: int(per_face.parts)}
    windows = _random_windows(rng, box, image.shape, 12 * (quotas[POS] + quotas[PART]) + 8,
                              4 * quotas[NEG], min_side=12)
    windows, labels = _take(rng, windows, _label(windows, box), quotas)
    parts.append(_pack(image, windows, labels, box, points, size))
    parts.extend(_extra_landmark_windows(seed, k, image, box, points, per_face, size))
  return _concat(parts, size)


def mine_windows(detector: mtcnn_detector.MTCNNDetector, stages: int, faces, size: int,
                 per_face: ml_collections.ConfigDict, seed: int,
                 batch: int = 16) -> dict[str, np.ndarray]:
  """The detections of the trained earlier stages on the training photos, labelled
  by IoU (the paper's samples of R-Net and O-Net), plus random positives and part
  faces (``per_face.positives``/``parts``) so that each class is present.

  ``per_face.negatives`` negatives per photo: the hardest detections (highest
  score first), topped up with random windows when there are fewer. Faces as in
  ``sample_windows``; landmark-only faces give random landmark windows (the
  detector is not run on them).
  """
  faces = [_unpack(f) for f in faces]
  parts = []
  for start in range(0, len(faces), batch):
    chunk = faces[start:start + batch]
    mined = [i for i, f in enumerate(chunk) if f[3] != "landmarks"]
    proposals = dict(zip(mined, detector.proposals([chunk[i][0] for i in mined], stages)
                         if mined else []))
    for k, (image, box, points, role) in enumerate(chunk):
      rng = np.random.default_rng([seed, start + k])
      if role == "landmarks":
        parts.append(_landmark_windows(rng, image, box, points,
                                       int(per_face.get("landmarks", 0)), size))
        continue
      found = proposals[k]
      found = found[(found[:, 2] - found[:, 0] + 1) >= 6] if len(found) else np.zeros((0, 5))
      windows = box_lib.to_pixel_edges(found)
      labels = _label(windows, box) if len(windows) else np.zeros(0, np.int64)
      order = np.argsort(-found[:, 4])
      negatives = order[labels[order] == NEG][:int(per_face.negatives)]
      keep = np.concatenate([negatives, np.flatnonzero(labels == POS),
                             np.flatnonzero(labels == PART)]).astype(np.int64)
      # Random windows: positives and part faces, and negatives where the earlier
      # stages left fewer hard ones than the quota (photos with one big face give
      # few: the classes would be badly unbalanced otherwise).
      missing = int(per_face.negatives) - len(negatives)
      extra = _random_windows(rng, box, image.shape, 12 * (per_face.positives + per_face.parts)
                              + 8, 4 * max(missing, 0), min_side=12)
      extra_w, extra_l = _take(rng, extra, _label(extra, box),
                               {NEG: max(missing, 0), POS: int(per_face.positives),
                                PART: int(per_face.parts)})
      all_w = np.concatenate([windows[keep], extra_w])
      all_l = np.concatenate([labels[keep], extra_l])
      parts.append(_pack(image, all_w, all_l, box, points, size))
      parts.extend(_extra_landmark_windows(seed, start + k, image, box, points, per_face,
                                           size))
  return _concat(parts, size)


def background_windows(num_images: int, per_image: int, size: int,
                       seed: int) -> dict[str, np.ndarray]:
  """Negatives from face-free synthetic backgrounds (the synthetic faces' renderer):
  ``per_image`` random windows of each of ``num_images`` backgrounds."""
  from jaxmarks.data import synthetic  # pylint: disable=g-import-not-at-top
  parts = []
  for k in range(int(num_images)):
    rng = np.random.default_rng([seed, 7, k])
    h, w = (int(v) for v in rng.integers(120, 400, 2))
    image = synthetic.render_background(rng, h, w)
    s = rng.uniform(12, min(h, w) * 0.8, per_image)
    x0, y0 = rng.uniform(0, w - s), rng.uniform(0, h - s)
    windows = np.stack([x0, y0, x0 + s, y0 + s], axis=1)
    parts.append(_pack(image, windows, np.full(per_image, NEG), np.zeros(4),
                       np.zeros((5, 2)), size))
  return _concat(parts, size)


def mirror_batch(batch: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Mirrors a random half of the windows: the image, the box offsets and the
  landmarks (with MTFL's left/right swap)."""
  flip = rng.random(len(batch["label"])) < 0.5
  out = dict(batch)
  out["image"] = np.where(flip[:, None, None, None], batch["image"][:, :, ::-1],
                          batch["image"])
  b = batch["box"]
  out["box"] = np.where(flip[:, None], np.stack([-b[:, 2], b[:, 1], -b[:, 0], b[:, 3]], axis=1),
                        b)
  lm = mtcnn_detector.mirror_window_points(batch["landmarks"])
  out["landmarks"] = np.where(flip[:, None, None], lm, batch["landmarks"]).astype(np.float32)
  return out


def loss_fn(net, weights, ohem: float, landmark_loss: str = "squared"):
  """The multi-task loss of one network: ``(params, model_state, batch, rng) ->
  (loss, (model_state, metrics))`` for the project's ``Trainer``.

  ``landmark_loss``: ``"squared"`` (the paper's squared error of the ten
  coordinates, in units of the window) or ``"nme"`` (the mean point-to-point
  distance over the eye-centre distance, as this project's TCDCN and DAN: about
  20 times larger at the start, so the landmarks are not drowned by the
  classification loss).
  """
  if landmark_loss not in ("squared", "nme"):
    raise ValueError(f"landmark_loss must be 'squared' or 'nme'; got {landmark_loss!r}")
  w_cls, w_box, w_lm = weights

  def fn(params, model_state, batch, rng):
    del rng
    out = net.apply({"params": params}, nets.normalize(batch["image"]))
    logits = out["logits"].reshape(-1, 2)
    box = out["box"].reshape(-1, 4)
    label = batch["label"]
    is_cls = (label == NEG) | (label == POS)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(label == POS, 1, 0))
    # Online hard example mining: the hardest `ohem` of the classification samples.
    n_cls = jnp.sum(is_cls)
    k = jnp.maximum(1, jnp.floor(ohem * n_cls)).astype(jnp.int32)
    ranked = jnp.sort(jnp.where(is_cls, ce, -jnp.inf))[::-1]
    cutoff = ranked[jnp.clip(k - 1, 0, ranked.shape[0] - 1)]
    hard = is_cls & (ce >= cutoff)
    cls_loss = jnp.sum(jnp.where(hard, ce, 0.0)) / jnp.maximum(jnp.sum(hard), 1)
    has_box = (label == POS) | (label == PART)
    box_err = jnp.sum((box - batch["box"]) ** 2, axis=-1)
    box_loss = jnp.sum(jnp.where(has_box, box_err, 0.0)) / jnp.maximum(jnp.sum(has_box), 1)
    loss = w_cls * cls_loss + w_box * box_loss
    metrics = {"cls_loss": cls_loss, "box_loss": box_loss,
               "accuracy": jnp.sum(jnp.where(is_cls, (jnp.argmax(logits, -1) == (label == POS)),
                                             False)) / jnp.maximum(n_cls, 1)}
    if "points" in out:
      points = out["points"].reshape(-1, 5, 2)
      # Positives and landmark faces that have landmarks (WIDER FACE's faces do not:
      # NaN targets, replaced before the arithmetic so no NaN reaches a gradient).
      known = jnp.all(jnp.isfinite(batch["landmarks"]), axis=(-1, -2))
      is_lm = ((label == POS) | (label == LANDMARK)) & known
      target = jnp.where(known[:, None, None], batch["landmarks"], 0.0)
      if landmark_loss == "nme":
        eyes = jnp.linalg.norm(target[:, 0] - target[:, 1], axis=-1)
        lm_err = jnp.mean(jnp.linalg.norm(points - target + 1e-12, axis=-1),
                          axis=-1) / jnp.maximum(eyes, 1e-3)
      else:
        lm_err = jnp.sum((points - target) ** 2, axis=(-1, -2))
      lm_loss = jnp.sum(jnp.where(is_lm, lm_err, 0.0)) / jnp.maximum(jnp.sum(is_lm), 1)
      loss = loss + w_lm * lm_loss
      metrics["landmark_loss"] = lm_loss
    return loss, (model_state, metrics)

  return fn


def _predict_fn(net):
  def fn(params, model_state, images):
    del model_state
    out = net.apply({"params": params}, nets.normalize(images))
    return out["points"].reshape(images.shape[0], 5, 2)
  return fn


def train_net(name: str, samples: dict[str, np.ndarray], val: dict[str, np.ndarray],
              workdir: pathlib.Path, cfg: ml_collections.ConfigDict, seed: int,
              progress: bool = True) -> Any:
  """Trains one network on its windows with the project's ``Trainer``; returns its
  parameters (resuming from ``workdir``'s checkpoints)."""
  from jaxmarks.train import data as train_data  # pylint: disable=g-import-not-at-top
  from jaxmarks.train import trainer as train_lib  # pylint: disable=g-import-not-at-top
  net = nets.NETS[name](with_landmarks=True)
  size = nets.INPUT_SIZE[name]
  params = net.init(jax.random.PRNGKey(seed), jnp.zeros((1, size, size, 3)))["params"]
  tx = train_lib.make_optimizer(cfg.optimizer, int(cfg.num_steps))
  phase = train_lib.Phase(name=name, num_steps=int(cfg.num_steps), tx=tx,
                          loss_fn=loss_fn(net, TASK_WEIGHTS[name], float(cfg.ohem),
                                          cfg.get("landmark_loss", "squared")),
                          predict_fn=_predict_fn(net))
  trainer = train_lib.Trainer(workdir, scheme="mtfl5", log_every=int(cfg.log_every),
                              eval_every=int(cfg.eval_every),
                              checkpoint_every=int(cfg.eval_every), keep_checkpoints=2,
                              progress=progress)
  batch_size = min(int(cfg.batch_size), len(samples["label"]))
  batch_size -= batch_size % max(1, jax.local_device_count())
  it = train_data.ArrayIterator(samples, batch_size, seed=seed, transform=mirror_batch)
  val_arrays = {"image": val["image"], "landmarks": val["landmarks"]}
  state = trainer.run([phase], params, {}, it, train_data.eval_batches(val_arrays, 256),
                      seed=seed)
  return jax.device_get(state.params)


def class_counts(samples: dict[str, np.ndarray]) -> str:
  labels = samples["label"]
  text = (f"{int(np.sum(labels == NEG))} negatives, {int(np.sum(labels == POS))} positives, "
          f"{int(np.sum(labels == PART))} part faces")
  if np.any(labels == LANDMARK):
    text += f", {int(np.sum(labels == LANDMARK))} landmark faces"
  return text


def save_samples(path: pathlib.Path, samples: dict[str, np.ndarray]) -> None:
  tmp = path.with_name(path.stem + ".tmp.npz")
  np.savez(tmp, **samples)
  tmp.replace(path)


def load_samples(path: pathlib.Path) -> dict[str, np.ndarray] | None:
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError):
    return None  # a damaged cache is made again


def timed(label: str):
  """A context manager printing how long a step took."""
  class _T:
    def __enter__(self):
      self.t = time.perf_counter()
      return self

    def __exit__(self, *exc):
      print(f"[mtcnn] {label}: {time.perf_counter() - self.t:.1f} s", flush=True)
  return _T()
