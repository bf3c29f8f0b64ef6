"""The models that ship in the package: cards, size, and float16 storage checked on
real data (the NME of the bundled weights is the card's float32 NME to 0.01 points)."""

import json
import pathlib

import numpy as np
import pytest

from jaxmarks import bundled
from jaxmarks import evaluation
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks import export
from jaxmarks import workdir as workdir_lib
from tests import helpers

_LANDMARK_MODELS = [n for n in bundled.names() if bundled.card(n)["kind"] != "detector"]
# dataset -> its subfolder of the shared data
_DATA = {"ibug300w": "300w", "mtfl": "mtfl"}


def test_every_bundled_model_has_a_card_and_loads():
  total = 0
  for name in bundled.names():
    folder = bundled.path(name)
    card = bundled.card(name)
    assert card["name"] == name
    for key in ("method", "kind", "paper", "scheme", "num_points", "license", "training",
                "evaluation", "storage", "parameters", "speed"):
      assert key in card, (name, key)
    assert (folder / "MODEL_CARD.md").is_file() or (folder / "NOTICE.md").is_file()
    if card["training"]["dataset"] in _DATA:  # research-only data: the card must say so
      assert "research" in card["license"].lower(), name
      assert "non-commercial" in (folder / "MODEL_CARD.md").read_text().lower(), name
    config, arrays, _ = export.read(folder)  # float16 storage comes back float32
    assert all(a.dtype != np.float16 for a in arrays.values())
    paths = [str(v) for v in export.flatten(config.to_dict()).values()
             if v.dtype.kind == "U" and any(str(x).startswith("/") for x in v.ravel())]
    assert not paths, f"{name}: this machine's paths in the shipped config: {paths}"
    assert card["storage"]["bytes"] == export.size_bytes(folder), name
    assert card["parameters"] == export.parameter_count(arrays), name
    seconds = card["training"]["seconds"]
    assert workdir_lib.training_facts(folder).get("train_seconds") == seconds, name
    total += sum(p.stat().st_size for p in folder.iterdir())
  assert total <= 25e6, f"bundled models take {total / 1e6:.1f} MB (limit 25 MB)"


@pytest.mark.slow
def test_bundled_models_run_on_the_sample_photo():
  photo = pipeline.read_image(bundled.SAMPLE_PHOTO)
  detector = methods.load_detector(bundled.DEFAULT_DETECTOR)
  found = {}
  for name in _LANDMARK_MODELS:
    faces = pipeline.detect_and_predict([photo], methods.load_predictor(name), detector)[0]
    assert len(faces) == 1, name
    found[name] = faces[0]
    assert faces[0].landmarks.shape == (bundled.card(name)["num_points"], 2)
  # Models of different methods put the eyes in the same places (within a few pixels;
  # the inter-ocular distance here is about 45 pixels).
  five = {n: f.landmarks if len(f.landmarks) == 5 else None for n, f in found.items()}
  own = detector.detect([photo])[0].points[0]
  for name, pts in five.items():
    if pts is not None:
      assert np.max(np.linalg.norm(pts - own, axis=-1)) < 6, name


@pytest.mark.parametrize("name", [n if n == "cpr-300w" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in _LANDMARK_MODELS])
def test_bundled_float16_keeps_the_nme(name):
  card = bundled.card(name)
  dataset = card["evaluation"]["dataset"]
  builder = helpers.prepared_builder(dataset, _DATA[dataset])
  predictor = methods.load_predictor(name)
  data = evaluation.eval_data_config(
      predictor.config, data_dir=str(pathlib.Path(builder.data_dir).parents[1]),
      manual_dir=str(helpers.require_data(_DATA[dataset])))
  summary = evaluation.evaluate(predictor, data, card["evaluation"]["split"], quiet=True)
  assert summary["n"] == card["evaluation"]["float32"]["n"]
  for key in ("nme_inter_ocular", "nme_inter_pupil"):
    float32 = card["evaluation"]["float32"][key]
    assert abs(summary[key] - float32) * 100 <= 0.01, (name, key, summary[key], float32)
  assert card["storage"]["dtype"] in ("float16", "float32")
  if card["storage"]["dtype"] == "float16":
    _, arrays, _ = export.read(bundled.path(name))
    manifest = json.loads((bundled.path(name) / "export.json").read_text())
    assert any(v["dtype"] == "float16" for v in manifest["arrays"].values())
    assert arrays
