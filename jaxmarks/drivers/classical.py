"""The one driver of every classical method: a ``ClassicalMethod`` spec in, a workdir out.

A classical method (ASM, AAM, CPR, ...) is pure functions over a NamedTuple of
parameter arrays. It supplies how to fit those parameters to training crops and
how to make a predictor from them (``ClassicalMethod``); ``train(spec, config,
workdir)`` does the rest:

1. checks that the workdir is new (an empty folder) or holds a run of the same
   method, then locks it for the whole run (``workdir.lock``);
2. loads the training faces through ``jaxmarks.data`` in evaluation mode (one
   pass, no augmentation: the crops every method sees at test time), records the
   scheme in ``config.scheme``;
3. fits the method, writes ``config.json`` and the inference export
   (``<workdir>/export``: config + parameter arrays, no pickle);
4. restores the predictor from the export, evaluates it on
   ``config.data.eval_split`` (``jaxmarks.evaluation``) and writes
   ``metrics_<split>.json`` with the NMEs, AUC, failure rate, time per face
   (batch 1), faces per second (batched) and the training time.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
import typing
from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxmarks import evaluation
from jaxmarks import export as export_lib
from jaxmarks import registry
from jaxmarks import validate
from jaxmarks import workdir as workdir_lib

__all__ = ["ClassicalMethod", "unit", "train", "load_arrays", "params_to_arrays",
           "params_from_arrays", "config_dataclass"]


@dataclasses.dataclass(frozen=True)
class ClassicalMethod:
  """What a classical method supplies; the driver does everything else.

  Attributes:
    name: the registry name (``config.method``).
    paper: citation of what it reproduces.
    config_file: its config file relative to the package, e.g. ``configs/cpr.py``.
    params_class: the (nested) NamedTuple of arrays its parameters are.
    fit: ``(images (N, S, S, C), landmarks (N, K, 2), scheme, config) -> params``.
    predictor: ``(params, config) -> Predictor``.
    time_repeats: batch-1 calls per timing round (slow methods use fewer).
    scheme: the scheme it always predicts, or None for the training data's.
    check_config: optional ``config -> None`` raising ValueError on a bad config
      (run before any data is loaded or anything written).
  """

  name: str
  paper: str
  config_file: str
  params_class: type
  fit: Callable[[np.ndarray, np.ndarray, str, ml_collections.ConfigDict], Any]
  predictor: Callable[[Any, ml_collections.ConfigDict], Any]
  time_repeats: int = 200
  scheme: str | None = None
  check_config: Callable[[ml_collections.ConfigDict], None] | None = None


def unit(spec: ClassicalMethod) -> registry.MethodUnit:
  """The registry unit of a classical method."""
  return registry.unit_for(spec, "classical", train, _predictor_from_export)


def config_dataclass(cls, section: ml_collections.ConfigDict, **overrides):
  """``cls(...)`` (a method's training-config dataclass) from the config section's
  fields of the same names; fields the section lacks keep their defaults, and
  ``overrides`` (values not in the section, e.g. the scheme) win."""
  names = {f.name for f in dataclasses.fields(cls)}
  return cls(**{k: section[k] for k in section.keys() if k in names}, **overrides)


# ------------------------------------------------------------------ parameters <-> arrays


def params_to_arrays(params: NamedTuple, prefix: str = "") -> dict[str, np.ndarray]:
  """A (nested) NamedTuple of arrays -> ``{"field/sub": array}`` (host NumPy)."""
  out: dict[str, np.ndarray] = {}
  for name in params._fields:
    value = getattr(params, name)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
      out.update(params_to_arrays(value, f"{prefix}{name}/"))
    elif value is not None:  # None: an optional field this model does not use
      out[f"{prefix}{name}"] = np.asarray(value)
  return out


def _namedtuple_hint(hint):
  """The NamedTuple class of a field hint ``X`` or ``X | None``, else None."""
  for candidate in (hint, *typing.get_args(hint)):
    if isinstance(candidate, type) and issubclass(candidate, tuple) and hasattr(
        candidate, "_fields"):
      return candidate
  return None


def params_from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = ""):
  """Inverse of ``params_to_arrays`` into NamedTuple class ``cls``; a clear error
  naming the missing field."""
  hints = typing.get_type_hints(cls)
  values = {}
  for name in cls._fields:
    sub = _namedtuple_hint(hints.get(name))
    if sub is not None:
      nested = f"{prefix}{name}/"
      if name in cls._field_defaults and not any(k.startswith(nested) for k in arrays):
        values[name] = cls._field_defaults[name]  # an optional part left out
      else:
        values[name] = params_from_arrays(sub, arrays, nested)
    else:
      key = f"{prefix}{name}"
      if key not in arrays and name in cls._field_defaults:
        values[name] = cls._field_defaults[name]  # an optional field left out
        continue
      if key not in arrays:
        raise ValueError(f"the export has no array {key!r} of {cls.__name__}: it was made by "
                         "another method or version")
      values[name] = jnp.asarray(arrays[key])
  return cls(**values)


def _predictor_from_export(spec: ClassicalMethod, config, arrays, info):
  del info
  return spec.predictor(params_from_arrays(spec.params_class, arrays), config)


# ------------------------------------------------------------------------------ driver


def load_arrays(data_config, split: str, max_faces: int | None = None, progress=None):
  """All faces of ``split`` as crops: ``(images (N, S, S, C), landmarks (N, K, 2), scheme)``."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top

  source, builder = data_lib.load_split(data_config, split)
  scheme = builders.scheme_of(builder)
  if max_faces is not None and max_faces < len(source):
    source = source.with_indices(source.indices[:max_faces])
  loader = data_lib.make_loader(data_config, split, training=False, source=source,
                                scheme=scheme, batch_size=64, worker_count=0)
  images, landmarks = [], []
  batches = loader if progress is None else progress(
      loader, total=-(-len(source) // 64), desc=f"loading {split}")
  for batch in batches:
    images.append(np.asarray(batch["image"], np.float32))
    landmarks.append(np.asarray(batch["landmarks"], np.float32))
  return np.concatenate(images), np.concatenate(landmarks), scheme


def check_unaugmented(data_config) -> None:
  """A classical method learns from the plain crops (``load_arrays``): a setting that
  only perturbs training crops would be ignored, so it is an error naming the field
  (CPR's and ERT's trainers perturb their initial shapes instead: ``jitter_*``)."""
  if data_config.get("augment"):
    raise ValueError("config.data.augment=True: the classical methods train on plain crops "
                     "(CPR and ERT jitter their initial shapes instead: config.<method>.jitter_*, "
                     "num_inits); set config.data.augment=False")
  if float(data_config.get("five_point_noise", 0.0) or 0.0) > 0:
    raise ValueError(f"config.data.five_point_noise={data_config.five_point_noise}: the "
                     "classical methods train on plain crops, so no noise would reach them (CPR "
                     "and ERT jitter their initial shapes instead: config.<method>.jitter_scale, "
                     "jitter_rotation, jitter_shift)")


def _tag(split: str) -> str:
  return split.replace(":", "_")


def train(spec: ClassicalMethod, config: ml_collections.ConfigDict,
          workdir: str | pathlib.Path, *, allow_foreign: bool = False) -> dict[str, Any]:
  """Fits, exports, evaluates and times one classical method (module docstring).

  Args:
    spec: the method.
    config: its config.
    workdir: the output folder, locked for the whole run (``workdir.lock``).
    allow_foreign: train into a non-empty folder that is not a workdir, beside the
      files it holds (none of them may have a name training writes).

  Returns:
    the metrics dict (also written to ``<workdir>/metrics_<split>.json``).
  """
  workdir = pathlib.Path(workdir).expanduser().resolve()
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy to fill in
  if config.get("method") != spec.name:
    raise ValueError(f"config.method is {config.get('method')!r}; this is the {spec.name!r} "
                     "driver")
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  data_lib.check_data_config(config.data)
  check_unaugmented(config.data)
  validate.check_int(config, "seed", 0)
  validate.check_int(config, "max_train_faces", 0)
  if spec.check_config is not None:
    spec.check_config(config)
  workdir_lib.claim(workdir, config, allow_foreign=allow_foreign)  # before any write
  with workdir_lib.lock(workdir):
    # Checked again under the lock: a training that ended meanwhile may have written it.
    workdir_lib.claim(workdir, config, allow_foreign=allow_foreign)
    return _train_locked(spec, config, workdir)


def _train_locked(spec: ClassicalMethod, config: ml_collections.ConfigDict,
                  workdir: pathlib.Path) -> dict[str, Any]:
  """``train`` with the workdir locked."""
  import tqdm  # pylint: disable=g-import-not-at-top

  data = config.data
  images, landmarks, scheme = load_arrays(data, data.train_split,
                                          config.get("max_train_faces") or None, tqdm.tqdm)
  scheme = spec.scheme or scheme
  print(f"{spec.name}: {len(images)} training faces from {data.dataset} {data.train_split} "
        f"({images.shape[1]}x{images.shape[2]} crops, scheme {scheme})", flush=True)
  config.scheme = scheme
  t0 = time.perf_counter()
  params = spec.fit(images, landmarks, scheme, config)
  train_seconds = time.perf_counter() - t0
  print(f"{spec.name}: trained in {train_seconds:.1f} s", flush=True)
  workdir_lib.check_export_dir(workdir, after_training=True)  # (files added meanwhile)
  workdir_lib.save_config(workdir, config)
  export_dir = export_lib.write(workdir / workdir_lib.EXPORT_DIR, config,
                                params_to_arrays(params),
                                {"params_class": spec.params_class.__name__,
                                 "train_seconds": train_seconds})
  predictor = _predictor_from_export(spec, *export_lib.read(export_dir))
  split = data.eval_split
  summary = evaluation.evaluate(predictor, evaluation.eval_data_config(config), split,
                                output_dir=workdir, batch_size=64)
  eval_images, _, _ = load_arrays(data, split, max_faces=64)
  speed = evaluation.time_predictor(predictor, eval_images, repeats=spec.time_repeats)
  tag = _tag(split)
  out = {
      "method": spec.name,
      "dataset": data.dataset,
      "split": split,
      "train_split": data.train_split,
      "num_train_faces": int(len(images)),
      f"nme_inter_ocular_{tag}": summary["nme_inter_ocular"],
      f"nme_inter_pupil_{tag}": summary["nme_inter_pupil"],
      f"nme_bbox_diagonal_{tag}": summary["nme_bbox_diagonal"],
      f"auc_0.08_inter_ocular_{tag}": summary["auc_inter_ocular"],
      f"failure_rate_0.08_inter_ocular_{tag}": summary["failure_rate_inter_ocular"],
      "diverged": summary.get("diverged"),
      "n": summary["n"],
      "train_seconds": train_seconds,
      "export": str(export_dir),
      **speed,
  }
  path = workdir / f"metrics_{tag}.json"
  path.write_text(evaluation.to_json(out))
  print(evaluation.to_json(out), flush=True)
  print(f"wrote {path}; inference export in {export_dir}", flush=True)
  return out
