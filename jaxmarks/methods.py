"""Every method behind one registry and two contracts.

  registry   ``MethodUnit`` per method; ``get(name)``, ``names()``
  base       the ``Predictor`` (crops -> landmarks) and ``Detector`` (photos -> boxes)
             contracts, ``Detections``
  workdir    ``config.json``, the scheme's one place (``config.scheme``), who owns
             a workdir
  export     the inference export (config + arrays, no optimizer, no pickle)
  deep       the one driver of every deep method (``DeepMethod`` specs)
  classical  the one driver of every classical method (``ClassicalMethod`` specs)
  mirror     test-time mirroring (``MirrorAveraged``: a prediction averaged with
             the one on the mirrored crop)

``load_predictor(path)`` restores any trained method from a workdir, a copied
export folder or a bundled model's name (``load_detector`` a face detector); ``train(config, workdir)`` trains the method ``config.method``
names.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import pathlib
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from jaxmarks import bundled
from jaxmarks import export
from jaxmarks.contracts import Detections, Detector, Predictor
from jaxmarks.registry import MethodUnit, get, names
from jaxmarks.workdir import load_config, save_config, scheme_of

__all__ = ["Predictor", "Detector", "Detections", "MethodUnit", "get", "names", "load_config",
           "save_config", "scheme_of", "resolve", "read_trained", "load_predictor",
           "load_detector", "parse_settings", "settings_tag", "is_detector", "train",
           "training_command", "evaluate_trained", "evaluate_detector"]


def resolve(path: str | pathlib.Path) -> pathlib.Path:
  """A workdir or export folder: ``path`` when it exists, else the folder of the
  bundled model of that name (``jaxmarks.bundled``), else a clear error."""
  p = pathlib.Path(path).expanduser()
  if p.exists():
    return p.resolve()
  if str(path) in bundled.MODELS:
    return bundled.path(str(path))
  raise FileNotFoundError(f"{path} is neither a folder nor a bundled model "
                          f"({', '.join(bundled.names())})")


def read_trained(path: str | pathlib.Path
                 ) -> tuple[ml_collections.ConfigDict, dict[str, np.ndarray], dict[str, Any]]:
  """What a trained method is made of: ``(config, arrays, info)``.

  ``path`` is a workdir, an export folder or a bundled model's name. From the
  export folder when ``path`` is one or holds one (``<workdir>/export``); for a
  deep workdir whose training has not finished (no export yet), from its best
  (else latest) checkpoint, without the optimizer state.
  """
  path = resolve(path)
  folder = export.locate(path)
  if folder is not None:
    return export.read(folder)
  config = load_config(path)  # a clear error if path is no workdir at all
  unit = get(config.get("method"))
  if unit.kind == "deep":
    from jaxmarks.drivers import deep  # pylint: disable=g-import-not-at-top
    return deep.read_checkpoint(path, config)
  raise FileNotFoundError(f"{path} holds a {unit.name!r} config but no export/ folder: its "
                          "training did not finish; run the training command again")


def load_predictor(path: str | pathlib.Path, mirror: bool = False) -> Predictor:
  """Restores the trained method in ``path`` (a workdir, an export folder or a
  bundled model's name). For a detector method (``kind == "detector"``) this is
  its ``Detector``. ``mirror``: average each prediction with the one on the
  mirrored crop (``jaxmarks.mirror``; landmark methods only)."""
  config, arrays, info = read_trained(path)
  unit = get(config.method)
  predictor = unit.load_predictor(config, arrays, info)
  if mirror:
    if unit.kind == "detector":
      raise ValueError(f"{path} holds a face detector ({unit.name!r}); test-time mirroring "
                       "is for landmark methods")
    from jaxmarks import mirror as mirror_lib  # pylint: disable=g-import-not-at-top
    predictor = mirror_lib.MirrorAveraged(predictor)
  return predictor


def load_detector(path: str | pathlib.Path,
                  settings: Mapping[str, Any] | None = None) -> Detector:
  """Restores a trained face detector (a workdir, an export folder or a bundled
  model's name, e.g. ``"mtcnn-original"``); a clear error for a landmark method.
  ``settings``: inference settings that replace the trained ones
  (``config.detector``, e.g. ``{"landmark_refine": True}``; the detector rejects a
  name it does not know)."""
  config, arrays, info = read_trained(path)
  unit = get(config.method)
  if unit.kind != "detector":
    raise ValueError(f"{path} holds a {unit.name!r} model, which is a landmark method, not a "
                     f"face detector (registered detectors: "
                     f"{', '.join(n for n in names() if get(n).kind == 'detector')})")
  if settings:
    with config.unlocked():
      if config.get("detector") is None:
        config.detector = ml_collections.ConfigDict()
      for name, value in dict(settings).items():
        try:
          config.detector[name] = value
        except TypeError as e:
          raise ValueError(f"{path}: detector setting {name}={value!r}: {e}") from e
  return unit.load_predictor(config, arrays, info)


def parse_settings(items: Sequence[str], flag: str = "--detector_setting") -> dict[str, Any]:
  """``name=value`` strings (the value a Python literal: ``thresholds=(0.5,0.6,0.6)``,
  ``landmark_refine=True``) -> a settings dict for ``load_detector``; a clear error
  naming the item at fault."""
  settings = {}
  for item in items:
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
      raise ValueError(f"{flag}={item!r}: expected name=value")
    try:
      settings[name.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError) as e:
      raise ValueError(f"{flag}={item!r}: the value is not a Python literal") from e
  return settings


def settings_tag(settings: Mapping[str, Any] | None) -> str:
  """Detector settings as a file-name tag: ``{"landmark_refine": True, "thresholds":
  (0.5, 0.6, 0.6)}`` -> ``"landmark_refine_thresholds-(0.5, 0.6, 0.6)"`` (False ones
  left out; ``""`` for none)."""
  return "_".join(k if v is True else f"{k}-{v}" for k, v in sorted((settings or {}).items())
                  if v is not False)


def is_detector(path: str | pathlib.Path) -> bool:
  """Whether ``path`` (a workdir, an export folder or a bundled model's name) holds a
  face detector rather than a landmark method (read from its config alone)."""
  return get(load_config(resolve(path)).get("method")).kind == "detector"


def train(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
          allow_foreign: bool = False) -> dict[str, Any]:
  """Trains the method ``config.method`` into ``workdir``; returns its evaluation summary.

  ``allow_foreign``: train into a non-empty folder that is not a workdir, beside the
  files it holds (the deep and classical drivers; none of those files may have a
  name training writes). A ValueError for other kinds of method.
  """
  unit = get(config.get("method"))
  if not allow_foreign:
    return unit.train(config, pathlib.Path(workdir))
  if unit.kind not in ("deep", "classical"):
    raise ValueError(f"--allow_foreign_workdir is not available for {unit.name!r}: train it "
                     "into a new or empty folder")
  return unit.train(config, pathlib.Path(workdir), allow_foreign=True)


def training_command(config: ml_collections.ConfigDict) -> str | None:
  """``jaxmarks train METHOD:VARIANT --workdir=DIR``: the command that trains ``config``
  (a trained model's) again, when it is one of its method's named variants as the
  current code defines them (``config_file``'s ``get_config``), the fields training
  fills in aside (those a variant leaves empty: ``scheme``, ``mean_shape``, ...), and
  where the data lives and whether a progress bar showed (``_NOT_TRAINING``), and the
  ablations the command trains after the model (``config.ablations``: they change
  nothing of the model itself); None when no variant matches (a config changed by
  flags, or by older code)."""
  unit = get(config.get("method"))
  spec = importlib.util.spec_from_file_location(f"_jaxmarks_config_{unit.name}",
                                                unit.config_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  trained = json.loads(config.to_json())
  trained.pop("ablations", None)
  for variant in getattr(module, "VARIANTS", ()):
    named = json.loads(module.get_config(variant).to_json())
    named.pop("ablations", None)
    if _same_config(trained, named):
      return f"jaxmarks train {unit.name}:{variant} --workdir=DIR"
  return None


_NOT_TRAINING = ("manual_dir", "data_dir", "progress")  # config fields that train nothing


def _same_config(trained: Any, variant: Any) -> bool:
  """Whether ``trained`` is ``variant`` but for what the variant leaves empty."""
  if variant in ("", None, [], {}):
    return True
  if isinstance(variant, dict):
    return isinstance(trained, dict) and all(
        _same_config(trained.get(k), variant.get(k))
        for k in set(trained) | set(variant) if k not in _NOT_TRAINING)
  return trained == variant


def evaluate_detector(path, dataset: str | None = None, split: str | None = None, *,
                              manual_dir: str | None = None, data_dir: str | None = None,
                              builder_config: str | None = None, output_dir=None,
                              limit: int | None = None, batch_size: int = 16,
                              settings: dict[str, Any] | None = None) -> dict[str, Any]:
  """``jaxmarks.photo_evaluation.evaluate_detector`` of the detector in ``path`` (a workdir, an export folder or
  a bundled model's name). The dataset defaults to the one the detector was
  evaluated on in training (``config.data.eval_dataset``); a bundled model needs
  ``dataset``. Writes into ``output_dir`` (default: ``path``, or ``./evaluation``
  for a bundled model). ``settings``: inference settings that replace the trained
  ones (``methods.load_detector``); the true ones name the output files and the
  summary records them."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks import photo_evaluation  # pylint: disable=g-import-not-at-top
  path = resolve(path)
  detector = load_detector(path, settings)
  trained = load_config(path).get("data")
  if trained is not None and trained.get("eval_dataset"):
    dataset = dataset or trained.eval_dataset
    if manual_dir is None and dataset == trained.eval_dataset:
      manual_dir = trained.get("eval_manual_dir", "")
    split = split or trained.get("eval_split")
  if not dataset:
    raise ValueError(f"{path} does not say which dataset to evaluate on: pass --dataset "
                     "(e.g. mtfl, with --manual_dir) and --split")
  d = data_lib.get_data_config()
  d.dataset = dataset
  d.manual_dir = manual_dir or ""
  d.data_dir = data_dir or ""
  d.builder_config = builder_config or ""
  if output_dir is None:
    output_dir = pathlib.Path("evaluation") if bundled.contains(path) else path
  extra = {"trained": str(path)}
  if settings:
    extra["detector_settings"] = dict(settings)
  return photo_evaluation.evaluate_detector(detector, d, split or "train:holdout", output_dir=output_dir,
                                            limit=limit, batch_size=batch_size, extra=extra,
                                            tag=settings_tag(settings))


def evaluate_trained(path, dataset: str | None = None, split: str | None = None, *,
                     builder_config: str | None = None, data_dir: str | None = None,
                     manual_dir: str | None = None, box_source: str | None = None,
                     batch_size: int = 64, output_dir=None, num_faces: int = 16,
                     predictor=None, mirror: bool = False,
                     compare_as: str | None = None) -> dict[str, Any]:
  """Evaluates the trained method in ``path`` (a workdir or an export folder) on any
  split of any dataset with its scheme; writes into ``output_dir`` (default: the
  workdir; for a bundled model or an export folder on its own ``./evaluation/<name>/``,
  ``evaluation.output_dir_for``, and says so). An ``output_dir`` in the installed package is refused.

  The dataset and its location default to the method's own ``config.data``; the
  crop settings are always the method's. ``predictor`` skips restoring it again.
  ``mirror``: test-time mirroring (``jaxmarks.mirror``); the files are then
  named ``..._mirror`` and the label says "mirror-averaged". ``compare_as``: score in
  that landmark scheme (``evaluation.evaluate``).
  """
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  path = resolve(path)  # a folder, or a bundled model's name
  if not output_dir:
    output_dir, why = evaluation.output_dir_for(path)
    if why:
      print(f"{why}: writing the evaluation into {output_dir} (--output_dir chooses "
            "another folder)", flush=True)
  evaluation.check_output_dir(output_dir)
  if predictor is None:
    predictor = load_predictor(path, mirror=mirror)
  elif mirror:
    from jaxmarks import mirror as mirror_lib  # pylint: disable=g-import-not-at-top
    predictor = mirror_lib.MirrorAveraged(predictor)
  data = evaluation.eval_data_config(predictor.config, dataset, builder_config, data_dir, manual_dir,
                          box_source, batch_size)
  return evaluation.evaluate(predictor, data, split, output_dir=output_dir,
                             batch_size=batch_size, num_faces=num_faces,
                             extra={"trained": str(path)}, compare_as=compare_as)
