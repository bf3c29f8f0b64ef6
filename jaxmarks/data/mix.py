"""Training on several datasets at once, each face with the points its dataset has.

``config.data.mix`` names more datasets whose training faces join each batch, as
``"NAME[/BUILDER_CONFIG][@SPLIT]=WEIGHT"`` strings (``SPLIT`` defaults to
``config.train_split``; the manual directory is ``config.mix_manual_dirs[NAME]``,
else the dataset's usual folder under ``$JAXMARKS_DATASETS``, ``jaxmarks.data.paths``). The main dataset
(``config.dataset``) weighs ``config.main_weight``; a batch holds each dataset's
faces in proportion to the weights (grain's ``MapDataset.mix``, each dataset
shuffled and repeated on its own, so the proportions hold in every stretch of
batches and the iterator resumes exactly).

Every face of a mixed batch has the same structure, in the main dataset's scheme
``M`` (``K`` points):

- a dataset whose scheme converts to ``M`` (``jaxmarks.schemes.convert``: 300-W's 68
  points to MTFL's five) gives its faces converted: full labels;
- any other (MTFL's five points in a 68-point training) is *partially labelled*:
  its ``k`` points fill ``landmarks[:k]``, the rest are zero and ``visible`` False,
  and ``label_scheme`` says which scheme they are (an index into
  ``label_schemes(...)``, whose first entry is ``M``). The loss compares the
  prediction converted to that scheme with them (``jaxmarks.metrics.labelled_nme``),
  normalised as that dataset's NME is.

Its crop is made as the main dataset's: ``box_source="landmarks"`` takes the box of
``M``'s points the face most likely has (``config.box_points``), and
``"five_points"`` the box the five points give for ``M``. A mixed batch also carries
``source`` ``(B,)`` int32, the dataset each face came from (0 the main one); a per-face
label (``config.extra_features``) that a dataset lacks is -1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jaxmarks import schemes

__all__ = ["Part", "parts", "label_schemes", "mix_label_schemes", "to_label_layout", "check_mix"]

MISSING_LABEL = -1


@dataclasses.dataclass(frozen=True)
class Part:
  """One dataset of a training mix: where its faces come from and its share."""
  dataset: str
  builder_config: str
  split: str
  weight: float
  manual_dir: str


def _parse(spec: str, default_split: str, manual_dirs=None) -> Part:
  from jaxmarks.data import paths  # pylint: disable=g-import-not-at-top
  text = str(spec).strip()
  name, eq, weight = text.partition("=")
  if not eq:
    raise ValueError(f"config.data.mix entry {spec!r}: use NAME[/BUILDER_CONFIG][@SPLIT]=WEIGHT, "
                     "e.g. 'mtfl=0.5'")
  name, _, split = name.partition("@")
  name, _, builder_config = name.partition("/")
  try:
    w = float(weight)
  except ValueError:
    w = float("nan")
  if not (w > 0 and np.isfinite(w)):
    raise ValueError(f"config.data.mix entry {spec!r}: the weight must be a number > 0")
  if not name:
    raise ValueError(f"config.data.mix entry {spec!r} names no dataset")
  name = name.strip()
  manual_dir = (manual_dirs or {}).get(name) or paths.default_manual_dir(name)
  return Part(name, builder_config.strip(), (split or default_split).strip(), w, manual_dir)


def parts(config) -> list[Part]:
  """The main dataset and ``config.mix``'s, in order (the main one first)."""
  main = Part(config.dataset, config.get("builder_config", "") or "", config.train_split,
              float(config.get("main_weight", 1.0)), config.get("manual_dir", "") or "")
  dirs = dict(config.get("mix_manual_dirs") or {})
  return [main] + [_parse(s, config.train_split, dirs) for s in (config.get("mix", ()) or ())]


def check_mix(config) -> None:
  """``config.data.mix`` and ``main_weight`` well formed (a ValueError naming the entry)."""
  w = float(config.get("main_weight", 1.0))
  if not (w >= 0 and np.isfinite(w)):
    raise ValueError(f"config.data.main_weight must be >= 0; got {config.get('main_weight')}")
  found = parts(config)
  if w == 0 and len(found) == 1:
    raise ValueError("config.data.main_weight=0 needs another dataset in config.data.mix")


def label_schemes(main: str, others: Sequence[str]) -> tuple[str, ...]:
  """The schemes a mixed batch's labels come in: ``main`` first, then each of
  ``others`` that does not convert to it (a partially labelled dataset), once."""
  out = [main]
  for s in others:
    if s != main and not schemes.can_convert(s, main) and s not in out:
      if not schemes.can_convert(main, s):
        raise ValueError(f"a dataset of scheme {s!r} cannot join a {main!r} training: "
                         f"neither scheme converts to the other")
      out.append(s)
  return tuple(out)


def mix_label_schemes(config, main: str) -> tuple[str, ...]:
  """``label_schemes`` of ``config.mix``'s datasets (each builder prepared to read its
  scheme) in a training of scheme ``main``; ``(main,)`` without a mix."""
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  others = []
  for part in parts(config)[1:]:
    builder = builders.prepare(part.dataset, data_dir=config.get("data_dir") or None,
                               manual_dir=part.manual_dir or None,
                               config=part.builder_config or None)
    others.append(builders.scheme_of(builder))
  return label_schemes(main, others)


def to_label_layout(example: dict[str, Any], scheme: str, main: str,
                    layout: tuple[str, ...], source: int,
                    features: Sequence[str] = ()) -> dict[str, Any]:
  """One crop example of a dataset of ``scheme`` in a ``main``-scheme mix (module
  docstring): landmarks converted or padded to ``(K, 2)``, ``visible`` ``(K,)``,
  ``label_scheme`` its index in ``layout``, ``source``, and each of ``features`` it
  lacks as ``MISSING_LABEL``."""
  k = schemes.get_scheme(main).num_points
  lm = np.asarray(example["landmarks"], np.float32)
  vis = np.asarray(example["visible"], bool)
  if scheme == main:
    index = 0
  elif schemes.can_convert(scheme, main):
    lm = schemes.convert(lm, scheme, main).astype(np.float32)
    v = np.repeat(vis.astype(np.float32)[:, None], 2, axis=1)
    vis = schemes.convert(v, scheme, main)[:, 0] >= 1.0
    index = 0
  else:
    index = layout.index(scheme)
    padded = np.zeros((k, 2), np.float32)
    padded[:lm.shape[0]] = lm
    shown = np.zeros((k,), bool)
    shown[:vis.shape[0]] = vis
    lm, vis = padded, shown
  out = dict(example, landmarks=lm, visible=vis, label_scheme=np.int32(index),
             source=np.int32(source))
  for name in features:
    if name not in out:
      out[name] = np.int32(MISSING_LABEL)
  return out
