"""Models that ship inside the package, loadable by name without training or download.

  cpr-300w         68 points, fast (CPR trained here on 300-W; research use only)
  dan-300w         68 points, DAN trained here on 300-W (research use only)
  dcnn-mtfl        5 points, DCNN trained here on MTFL (research use only)
  mtcnn-original   MTCNN with the authors' released weights (MIT; imported by
                   ``python -m experiments.import_mtcnn``; see its NOTICE.md)

The models trained here are made by ``python -m experiments.bundle`` from a
workdir: float16 arrays where that leaves the NME unchanged to 0.01 points, and a
model card (``MODEL_CARD.md``, ``card.json``: the training command, the data and
its terms, the held-out NME, size and speed). ``samples/astronaut.jpg`` is a
public-domain photo for demos (``SAMPLE_PHOTO``). ``face_roll/`` holds the small
network the detector's ``any_roll`` uses to keep the right-way-up copy of a face
(``FACE_ROLL``, with its card).

``path(name)`` is the model's export folder (``jaxmarks.export``);
``jaxmarks.methods.load_predictor(name)`` loads it like any trained workdir.
Each folder holds a notice or model card: where the weights come from, their
license and the terms of the data they were trained on. Each ``export.json`` holds
the SHA-256 of the arrays (``arrays_sha256``, ``jaxmarks.export``), checked
on every load: a changed ``arrays.npz`` is an error, not a silently different model.
``python -m experiments.bundle`` replaces a model only with ``--replace`` and never
an imported one (``mtcnn-original``, with its NOTICE and LICENSE).
"""

from __future__ import annotations

import pathlib

import json
from typing import Any

__all__ = ["MODELS", "DEFAULT_LANDMARKS", "DEFAULT_DETECTOR", "SAMPLE_PHOTO", "SAMPLE_FACE", "names", "path",
           "contains", "card", "FACE_ROLL"]

# name -> folder beside this file
MODELS = {"cpr-300w": "cpr_300w", "dan-300w": "dan_300w", "dcnn-mtfl": "dcnn_mtfl",
          "mtcnn-original": "mtcnn_original"}
# What ``jaxmarks predict`` uses when told nothing: the fastest 68-point model, which
# is also the most accurate one on 300-W train:holdout (see its card).
DEFAULT_LANDMARKS = "cpr-300w"
DEFAULT_DETECTOR = "mtcnn-original"
# Eileen Collins, NASA (public domain; taken from scikit-image's data): see samples/SOURCE.md.
SAMPLE_PHOTO = pathlib.Path(__file__).parent / "samples" / "astronaut.jpg"
# The network that tells which way is down in a detected face's window, for the
# detector's ``any_roll`` (``jaxmarks.detection.face_roll``; made by ``python -m
# experiments.face_roll``; not a landmark model, so not in ``MODELS``).
FACE_ROLL = pathlib.Path(__file__).parent / "face_roll"
# Its face as the bundled detector finds it (box and five points; JSON).
SAMPLE_FACE = pathlib.Path(__file__).parent / "samples" / "astronaut.json"


def names() -> list[str]:
  """The bundled models' names."""
  return sorted(MODELS)


def path(name: str) -> pathlib.Path:
  """The export folder of bundled model ``name``; a clear error for an unknown one."""
  if name not in MODELS:
    raise ValueError(f"no bundled model {name!r}; bundled models: {', '.join(names())}")
  return pathlib.Path(__file__).parent / MODELS[name]


def contains(folder: str | pathlib.Path) -> bool:
  """Whether ``folder`` is (inside) a bundled model, i.e. in the installed package,
  where nothing should be written."""
  return pathlib.Path(__file__).parent in pathlib.Path(folder).resolve().parents


def card(name: str) -> dict[str, Any]:
  """The model card of bundled model ``name`` (``card.json``) as a dict."""
  return json.loads((path(name) / "card.json").read_text())
