"""MTCNN as a registered method (``jaxmarks.methods`` kind ``"detector"``).

  python -m experiments.train --config=jaxmarks/configs/mtcnn.py:mtfl --workdir=W

trains P-Net, R-Net and O-Net in turn (``jaxmarks.detection.mtcnn_train``) into
``W/pnet``, ``W/rnet`` and ``W/onet``, writes the export (``W/export``: the three
networks' parameters and the detector settings) and evaluates the cascade on the
whole photos of ``config.data.eval_split`` (``jaxmarks.photo_evaluation``):
faces missed and the five points' NME of the faces found. ``load_predictor`` of a
detector unit gives an ``MTCNNDetector``.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections
import numpy as np

from jaxmarks.detection import mtcnn_detector
from jaxmarks import export as export_lib
from jaxmarks import registry
from jaxmarks import validate
from jaxmarks import workdir as workdir_lib

__all__ = ["UNIT", "load_detector", "train", "check_config"]

PAPER = ("Zhang, Zhang, Li and Qiao, Joint Face Detection and Alignment using Multi-task "
         "Cascaded Convolutional Networks, IEEE Signal Processing Letters 2016")
RESUME_KEYS = ("pnet.num_steps", "rnet.num_steps", "onet.num_steps", "data.datasets",
               "data.train_split", "seed")


def load_detector(config: ml_collections.ConfigDict, arrays: dict[str, np.ndarray],
                  info: dict[str, Any]) -> mtcnn_detector.MTCNNDetector:
  """The detector of an export (``config``, ``arrays`` from ``export.read``)."""
  del info
  tree = export_lib.unflatten(arrays)
  if "params" not in tree or set(tree["params"]) != {"pnet", "rnet", "onet"}:
    raise ValueError("an MTCNN export must hold params/pnet, params/rnet and params/onet")
  settings = mtcnn_detector.default_detector_config()  # settings added since the export
  saved = config.get("detector")
  if saved is not None:
    unknown = sorted(set(saved.keys()) - set(settings.keys()))
    if unknown:
      raise ValueError(f"unknown MTCNN detector setting(s) {', '.join(unknown)}; known: "
                       f"{', '.join(sorted(settings.keys()))}")
    for name, value in saved.to_dict().items():
      try:
        settings[name] = value
      except TypeError as e:
        raise ValueError(f"config.detector.{name}: {e}") from e
  with config.unlocked():
    config.detector = settings
  check_detector_settings(config)
  return mtcnn_detector.MTCNNDetector(tree["params"], config)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Every field the training reads, checked before anything is written."""
  d = config.data
  if len(d.datasets) != len(d.manual_dirs) or not d.datasets:
    raise ValueError("config.data.datasets and config.data.manual_dirs must be non-empty "
                     f"and of equal length; got {list(d.datasets)} and {list(d.manual_dirs)}")
  for net in ("pnet", "rnet", "onet"):
    for field in ("num_steps", "batch_size", "max_faces", "eval_every", "log_every"):
      validate.check_int(config, f"{net}.{field}", 1)
    validate.check_float(config, f"{net}.ohem", 0.0, 1.0, low_open=True)
    if config[net].get("landmark_loss", "squared") not in ("squared", "nme"):
      raise ValueError(f"config.{net}.landmark_loss must be 'squared' or 'nme'; got "
                       f"{config[net].landmark_loss!r}")
    for field in ("negatives", "positives", "parts"):
      validate.check_int(config, f"{net}.per_face.{field}", 0)
    if "landmarks" in config[net].per_face:
      validate.check_int(config, f"{net}.per_face.landmarks", 0)
  validate.check_int(config, "data.val_faces", 1)
  validate.check_int(config, "data.backgrounds", 0)
  check_detector_settings(config)


def check_detector_settings(config: ml_collections.ConfigDict) -> None:
  """``config.detector``'s values: a clear error naming the field at fault."""
  t = config.detector.thresholds
  if (not isinstance(t, (tuple, list)) or len(t) != 3
      or not all(isinstance(v, (int, float)) and 0.0 <= float(v) <= 1.0 for v in t)):
    raise ValueError(f"config.detector.thresholds must be three numbers in [0, 1]; got {t}")
  validate.check_int(config, "detector.min_face_size", 12)
  for field in ("landmark_refine", "landmark_mirror", "any_roll", "roll_net"):
    if not isinstance(config.detector.get(field, False), bool):
      raise ValueError(f"config.detector.{field} must be True or False; got "
                       f"{config.detector[field]!r}")
  if "empty_retry" in config.detector:  # P-Net's threshold for the second look; 0 = none
    validate.check_float(config, "detector.empty_retry", 0.0, 1.0)
  if "landmark_shift" in config.detector:  # a fraction of the face box's side
    validate.check_float(config, "detector.landmark_shift", 0.0, 0.5, high_open=True)


def _data_config(config, dataset: str, manual_dir: str, builder_config: str | None = None):
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  d = data_lib.get_data_config()
  d.dataset = dataset
  d.manual_dir = manual_dir
  d.data_dir = config.data.get("data_dir", "")
  d.builder_config = (config.data.get("builder_config", "") if builder_config is None
                      else builder_config)
  d.holdout_fraction = config.data.holdout_fraction
  d.holdout_seed = config.data.holdout_seed
  return d


def _roles(config) -> tuple[str, ...]:
  """Each training dataset's role (``mtcnn_train.sample_windows``): ``"both"``
  (landmarks, the face box made from them), ``"boxes"`` (several face boxes per
  photo, no landmarks: WIDER FACE) or ``"landmarks"`` (landmark faces only: CelebA)."""
  roles = tuple(config.data.get("roles") or ("both",) * len(config.data.datasets))
  if len(roles) != len(config.data.datasets):
    raise ValueError(f"config.data.roles {roles} must name a role per dataset "
                     f"{tuple(config.data.datasets)}")
  return roles


def _square(boxes: np.ndarray) -> np.ndarray:
  """Square boxes ``(M, 4)`` about the centres of ``boxes``, side the longer side."""
  c = (boxes[:, :2] + boxes[:, 2:]) / 2
  side = np.max(boxes[:, 2:] - boxes[:, :2], axis=1, keepdims=True)
  return np.concatenate([c - side / 2, c + side / 2], axis=1)


def _faces(config, split: str, limit: int, seed: int, with_landmarks: bool = False):
  """Up to ``limit`` face records of ``split`` over every training dataset (evenly
  drawn from each; ``with_landmarks``: only datasets with landmarks):
  ``(image, face box, five points, role)``, or for a "boxes" dataset (WIDER FACE)
  ``(image, valid boxes (M, 4) squared, None, "boxes")`` per photo."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks import schemes as schemes_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  from jaxmarks.detection import mtcnn_train  # pylint: disable=g-import-not-at-top
  configs = tuple(config.data.get("builder_configs") or
                  (config.data.get("builder_config", ""),) * len(config.data.datasets))
  sources = []
  for dataset, manual_dir, builder_config, role in zip(
      config.data.datasets, config.data.manual_dirs, configs, _roles(config)):
    if with_landmarks and role == "boxes":
      continue
    d = _data_config(config, dataset, manual_dir, builder_config)
    source, builder = data_lib.load_split(d, split)
    scheme = None if role == "boxes" else builders.scheme_of(builder)
    sources.append((source, scheme, role))
  per_source = max(1, limit // max(len(sources), 1))
  for s, (source, scheme, role) in enumerate(sources):
    n = len(source)
    picks = np.sort(np.random.default_rng([seed, s]).permutation(n)[:per_source])
    for j in picks:
      record = source[int(j)]
      if role == "boxes":
        faces = record["faces"]
        boxes = np.asarray(faces["box"], np.float64).reshape(-1, 4)
        keep = ~np.asarray(faces.get("invalid", np.zeros(len(boxes), bool)), bool)
        boxes = boxes[keep & (np.min(boxes[:, 2:] - boxes[:, :2], axis=1) >= 12)]
        if len(boxes):
          yield record["image"], _square(boxes), None, "boxes"
        continue
      lm = np.asarray(record["landmarks"], np.float64)
      five = schemes_lib.convert(lm[None], scheme, "mtfl5")[0]
      yield record["image"], mtcnn_train.face_box(lm, scheme), five, role


def train(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  """Trains the three networks in turn, exports them and evaluates the cascade.

  The workdir is locked for the whole run (``workdir.lock``): a second training on it
  stops at once, naming this one.
  """
  workdir = pathlib.Path(workdir).expanduser().resolve()
  check_config(config)
  workdir_lib.claim(workdir, config, RESUME_KEYS)  # before any write
  with workdir_lib.lock(workdir):
    # Checked again under the lock: a training that ended meanwhile may have written it.
    workdir_lib.claim(workdir, config, RESUME_KEYS)
    return _train_locked(config, workdir)


def _train_locked(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> dict[str, Any]:
  """``train`` with the workdir locked."""
  import jax  # pylint: disable=g-import-not-at-top
  from jaxmarks import photo_evaluation as evaluate_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.detection import mtcnn_train as T  # pylint: disable=g-import-not-at-top
  from jaxmarks.detection import mtcnn_nets as nets  # pylint: disable=g-import-not-at-top

  workdir_lib.save_config(workdir, config)
  seed = int(config.seed)
  progress = bool(config.get("progress", True))
  params: dict[str, Any] = {}
  # The validation faces every network's windows are cut from (decoded once).
  val_faces = list(_faces(config, config.data.eval_split, int(config.data.val_faces),
                          seed + 10, with_landmarks=True))
  val_faces = [(image, box, points) for image, box, points, _ in val_faces]
  for stage, name in enumerate(T.NETS):
    cfg = config[name]
    size = nets.INPUT_SIZE[name]
    cache = workdir / name / "samples.npz"
    samples = T.load_samples(cache)
    if samples is None:
      with T.timed(f"{name} samples"):
        faces = _faces(config, config.data.train_split, int(cfg.max_faces), seed + stage)
        if stage == 0:
          samples = T.sample_windows(faces, size, cfg.per_face, seed)
        else:
          # The stages trained so far (the next stage's networks are not needed).
          miner = mtcnn_detector.MTCNNDetector(params, _detector_config(config, mining=True))
          samples = T.mine_windows(miner, stage, faces, size, cfg.per_face, seed)
        if int(config.data.backgrounds):
          extra = T.background_windows(int(config.data.backgrounds),
                                       int(cfg.per_face.negatives), size, seed + stage)
          samples = {k: np.concatenate([samples[k], extra[k]]) for k in samples}
      (workdir / name).mkdir(parents=True, exist_ok=True)
      T.save_samples(cache, samples)
    print(f"[mtcnn] {name}: {len(samples['label'])} windows ({T.class_counts(samples)})",
          flush=True)
    val = T.sample_windows(val_faces, size, ml_collections.ConfigDict(
        {"negatives": 0, "positives": 1, "parts": 0}), seed + 20)
    with T.timed(f"{name} training"):
      params[name] = T.train_net(name, samples, val, workdir / name, cfg, seed + stage,
                                 progress=progress)
  export_config = _detector_config(config, mining=False)
  arrays = export_lib.flatten({"params": jax.device_get(params)})
  export_dir = export_lib.write(workdir / workdir_lib.EXPORT_DIR, export_config, arrays,
                                {"trained_from": str(workdir)})
  print(f"[mtcnn] export: {export_dir}", flush=True)
  detector = load_detector(*export_lib.read(export_dir)[:2], {})
  d = _data_config(config, config.data.eval_dataset, config.data.eval_manual_dir,
                   config.data.get("eval_builder_config"))
  limit = int(config.data.get("eval_limit", 0)) or None
  return evaluate_lib.evaluate_detector(detector, d, config.data.eval_split,
                                        output_dir=workdir, limit=limit,
                                        extra={"trained": str(workdir)})


def _detector_config(config: ml_collections.ConfigDict, mining: bool) -> ml_collections.ConfigDict:
  """The config an export (or the miner of the next stage's windows) carries."""
  c = ml_collections.ConfigDict()
  c.method = "mtcnn"
  c.scheme = "mtfl5"
  c.variant = config.get("variant", "")
  c.model = ml_collections.ConfigDict({"pnet_landmarks": True, "rnet_landmarks": True})
  c.detector = ml_collections.ConfigDict(config.detector.to_dict())
  if mining:
    c.detector.thresholds = tuple(config.mining_thresholds)
  return c


UNIT = registry.MethodUnit(
    name="mtcnn", kind="detector", paper=PAPER, config_file="configs/mtcnn.py",
    train=train, load_predictor=load_detector, scheme="mtfl5",
    paper_speed="16 FPS on a 2.60 GHz CPU (640x480, min face 20 px; Sec. III-F of the paper)")
