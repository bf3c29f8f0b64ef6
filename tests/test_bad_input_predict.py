"""Bad input to ``jaxmarks predict`` / ``experiments.predict`` and photo reading.

Each test is a case of the bad-input issue (numbered as there; the unnumbered ones
are its "unclear" cases). Most run the library functions in-process with a fake
face detector (no compilation); the exit statuses are checked with the command.
"""

import errno
import json
import os
import pathlib
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from jaxmarks.cli import predict
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks.contracts import Detections
from tests import helpers


@pytest.fixture(scope="module")
def xla_cache(tmp_path_factory):
  return tmp_path_factory.mktemp("xdg_cache")


def _cli(*args, cwd, cache):
  """``jaxmarks predict ARGS`` (``jaxmarks.cli.main``), with the bundled models."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(helpers.REPO_ROOT),
             XDG_CACHE_HOME=str(cache))
  return subprocess.run([sys.executable, "-m", "jaxmarks.cli.main", "predict", *map(str, args)],
                        cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(r) -> str:
  assert r.returncode == 2, (r.stdout, r.stderr)
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr  # no traceback
  return lines[0]


class FakeDetector:
  """One face in the middle of every photo, with five points; records what it saw."""

  def __init__(self, real):
    self.config, self.settings = real.config, real.settings
    self.seen = []

  def detect(self, images):
    out = []
    for image in images:
      self.seen.append(image.shape)
      h, w = image.shape[:2]
      box = np.array([w / 4, h / 4, 3 * w / 4, 3 * h / 4])
      points = np.array([[0.35, 0.4], [0.65, 0.4], [0.5, 0.55], [0.38, 0.7], [0.62, 0.7]])
      points = points * [w, h]
      out.append(Detections(box[None], np.array([0.99]), points[None]))
    return out


@pytest.fixture(scope="module")
def real_detector():
  return methods.load_detector("mtcnn-original")


@pytest.fixture
def detector(real_detector, monkeypatch):
  """``--detector=mtcnn-original`` answered by ``FakeDetector`` (no XLA compiling)."""
  fake = FakeDetector(real_detector)
  monkeypatch.setattr(methods, "load_detector", lambda *a, **k: fake)
  return fake


def _photo(path, h=64, w=80, seed=0):
  image = np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)
  assert cv2.imwrite(str(path), image)
  return path


def _partials(folder):
  return [p.name for p in pathlib.Path(folder).iterdir() if ".partial" in p.name]


def _png(width, height, depth, color_type, pixels=None, sbit=None) -> bytes:
  """A PNG written chunk by chunk (``pixels``: (H, W, C) big-endian rows)."""

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

  out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth,
                                                           color_type, 0, 0, 0))
  if sbit:
    out += chunk(b"sBIT", bytes(sbit))
  rows = b"\x00" if pixels is None else b"".join(
      b"\x00" + row.tobytes() for row in pixels.astype(f">u{depth // 8}"))
  return out + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _video(path, n=12, damaged=(), h=64, w=80):
  """An MJPG AVI of ``n`` frames (each an independent JPEG); the JPEG data of the
  ``damaged`` frames are zeroed, so that OpenCV cannot decode them."""
  writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (w, h))
  assert writer.isOpened()
  for i in range(n):
    frame = np.full((h, w, 3), 10 + 20 * i, np.uint8)
    cv2.putText(frame, str(i), (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
    writer.write(frame)
  writer.release()
  data = bytearray(path.read_bytes())
  chunks, pos = [], data.find(b"movi")
  while (pos := data.find(b"00dc", pos + 1)) > 0:
    size = int.from_bytes(data[pos + 4:pos + 8], "little")
    if data[pos + 8:pos + 10] == b"\xff\xd8":  # a frame (the index at the end also says 00dc)
      chunks.append((pos + 8, size))
  assert len(chunks) == n
  for k in damaged:
    start, size = chunks[k]
    data[start:start + size] = bytes(size)
  path.write_bytes(bytes(data))
  return path


# --- 1: one bad photo neither empties the results nor stops the folder -----------------


def test_1_an_unreadable_photo_of_a_folder_is_skipped_named(tmp_path, detector, capsys,
                                                            monkeypatch):
  photos, out = tmp_path / "photos", tmp_path / "out"
  photos.mkdir()
  _photo(photos / "a.png")
  _photo(photos / "b.png", seed=1)
  both = predict.Outputs(csv_files=True)
  assert len(predict.run_folder(None, photos, out, outputs=both)) == 2
  before = {n: (out / n).read_text() for n in ("predictions.jsonl", "predictions.csv")}
  assert len(before["predictions.jsonl"].splitlines()) == 2
  (photos / "c_bad.jpg").write_text("not a photo")
  capsys.readouterr()
  records = predict.run_folder(None, photos, out, outputs=both)
  captured = capsys.readouterr()
  assert [pathlib.Path(r["image"]).name for r in records] == ["a.png", "b.png"]
  assert [pathlib.Path(p).name for p, _ in records.skipped] == ["c_bad.jpg"]
  warning = [line for line in captured.err.splitlines() if line.startswith("warning:")]
  assert len(warning) == 1 and "c_bad.jpg is not an image file" in warning[0]
  assert "1 unreadable photo(s) skipped" in captured.out
  assert {n: (out / n).read_text() for n in before} == before  # the same two photos
  # An interrupted run (here at its second photo) leaves the earlier files whole.
  faces = predict.Models.faces
  calls = []

  def interrupted(self, images):
    calls.append(len(images))
    if len(calls) == 2:
      raise KeyboardInterrupt
    return faces(self, images)

  monkeypatch.setattr(predict.Models, "faces", interrupted)
  with pytest.raises(KeyboardInterrupt):
    predict.run_folder(None, photos, out, batch_size=1, outputs=both)
  assert {n: (out / n).read_text() for n in before} == before
  assert not _partials(out)


@pytest.mark.slow
def test_1_the_command_skips_the_photo_and_exits_1(tmp_path, xla_cache):
  photos, out = tmp_path / "photos", tmp_path / "out"
  photos.mkdir()
  cv2.imwrite(str(photos / "a.png"), np.zeros((48, 64, 3), np.uint8))
  (photos / "c_bad.jpg").write_text("not a photo")
  out.mkdir()
  (out / "predictions.jsonl").write_text('{"image": "from an earlier run"}\n')
  r = _cli(photos, f"--output_dir={out}", "--csv", cwd=tmp_path, cache=xla_cache)
  assert r.returncode == 1, r.stderr
  warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
  assert len(warnings) == 1 and "c_bad.jpg" in warnings[0] and "Traceback" not in r.stderr
  assert f"note: replacing {out / 'predictions.jsonl'} " in r.stderr
  lines = (out / "predictions.jsonl").read_text().splitlines()
  assert [pathlib.Path(json.loads(x)["image"]).name for x in lines] == ["a.png"]
  assert (out / "predictions.csv").is_file() and not _partials(out)


# --- 2: photos with one stem get an overlay each -------------------------------------


def test_2_photos_sharing_a_stem_get_an_overlay_each(tmp_path, detector):
  photos, out = tmp_path / "photos", tmp_path / "out"
  photos.mkdir()
  _photo(photos / "face.jpg")
  _photo(photos / "face.png", seed=1)
  _photo(photos / "other.png", seed=2)
  predict.run_folder(None, photos, out)
  assert sorted(p.name for p in out.glob("*.png")) == [
      "face_jpg_landmarks.png", "face_png_landmarks.png", "other_landmarks.png"]
  names = predict.overlay_stems([pathlib.Path(p) for p in (
      "face.jpg", "face.png", "face_jpg.png", "Face.JPG", "a/b.jpg", "c/b.jpg")])
  assert len({n.lower() for n in names}) == 6 and names[:2] == ["face_jpg", "face_png"]


# --- 3: a damaged video frame is skipped, counted, and the run exits 1 ----------------


def test_3_a_damaged_video_frame_is_skipped_and_counted(tmp_path, detector, capsys):
  video = _video(tmp_path / "clip.avi", damaged=(2,))
  result = predict.run_video(None, video, tmp_path / "out", batch_size=4)
  assert (result["frames"], result["skipped_frames"], result["missing_frames"],
          result["frame_count"]) == (11, 1, 0, 12)
  frames = [json.loads(x)["frame"] for x in
            (tmp_path / "out" / "clip_landmarks.jsonl").read_text().splitlines()]
  assert frames == [0, 1, *range(3, 12)]  # the video's own frame numbers
  captured = capsys.readouterr()
  assert "1 frame(s) could not be decoded and were skipped (frame 2)" in captured.err
  assert "1 of the video's 12 frames could not be read" in captured.out
  # A damaged last frame cannot be told from a short file: it is missing.
  result = predict.run_video(None, _video(tmp_path / "end.avi", damaged=(11,)),
                             tmp_path / "out")
  assert (result["frames"], result["skipped_frames"], result["missing_frames"]) == (11, 0, 1)


@pytest.mark.slow
def test_3_the_command_exits_1_on_a_damaged_video(tmp_path, xla_cache):
  video = _video(tmp_path / "clip.avi", damaged=(2,), h=48, w=64)
  r = _cli(video, f"--output_dir={tmp_path / 'out'}", "--nooverlay", cwd=tmp_path,
           cache=xla_cache)
  assert r.returncode == 1, r.stderr
  assert "11 frame(s)" in r.stdout and "could not be decoded" in r.stderr


# --- 4: every write is checked; the output folder before any inference ---------------


def test_4_an_output_folder_that_cannot_be_written_is_refused_first(tmp_path, detector):
  photo = _photo(tmp_path / "photo.png")
  a_file = tmp_path / "a_file"
  a_file.write_text("mine")
  with pytest.raises(ValueError, match=r"--output_dir .*a_file is a file, not a folder"):
    predict.run(None, photo, output_dir=a_file)
  with pytest.raises(ValueError, match=r"--output_dir .*a_file/sub cannot be created"):
    predict.run_folder(None, [photo], output_dir=a_file / "sub")
  with pytest.raises(ValueError, match=r"--output_dir /proc is not writable"):
    predict.run(None, photo, output_dir="/proc")  # not even root writes there
  assert detector.seen == [] and a_file.read_text() == "mine"  # no inference ran


def test_4_a_failed_write_is_an_error_naming_the_file(tmp_path, detector, monkeypatch):
  photo, out = _photo(tmp_path / "photo.png"), tmp_path / "out"
  with monkeypatch.context() as m:  # a full disk: OpenCV returns False
    m.setattr(cv2, "imwrite", lambda *a, **k: False)
    with pytest.raises(OSError, match=r"cannot write .*out/photo_landmarks\.png"):
      predict.run(None, photo, output_dir=out)
  assert not list(out.iterdir())  # the JSON is not left without its overlay

  def full(self, *a, **k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  with monkeypatch.context() as m:
    m.setattr(pathlib.Path, "write_text", full)
    with pytest.raises(OSError, match=r"cannot write .*photo_landmarks\.json: No space left"):
      predict.run(None, photo, output_dir=out, outputs=predict.Outputs(overlay=False))
  assert not list(out.iterdir())

  class Closed:
    def __init__(self, *a, **k):
      pass

    def isOpened(self):  # noqa: N802
      return False

    def release(self):
      pass

  video = _video(tmp_path / "clip.avi", n=3)
  monkeypatch.setattr(cv2, "VideoWriter", Closed)
  with pytest.raises(OSError, match=r"cannot write .*clip_landmarks\.mp4: OpenCV's VideoWriter"):
    predict.run_video(None, video, out)
  assert not list(out.iterdir())


# --- 5: --batch_size and --min_face_size before anything is written ------------------


def test_5_batch_size_is_checked_before_anything_is_written(tmp_path, detector):
  photos = tmp_path / "photos"
  photos.mkdir()
  _photo(photos / "a.png")
  for bad in (-3, 0):
    with pytest.raises(ValueError, match=rf"--batch_size must be an integer >= 1; got {bad}$"):
      predict.run_folder(None, photos, tmp_path / "out", batch_size=bad)
  with pytest.raises(ValueError, match=r"--batch_size must be an integer >= 1; got 0"):
    predict.run_video(None, _video(tmp_path / "clip.avi", n=2), tmp_path / "out", batch_size=0)
  with pytest.raises(ValueError, match=r"--min_face_size must be 0 .* >= 12 pixels; got -5"):
    predict.run_folder(None, photos, tmp_path / "out", min_face_size=-5)
  assert not (tmp_path / "out").exists()


# --- 13: 16-bit, grey and alpha photos -------------------------------------------------


def test_13_16_bit_pngs_are_scaled_by_the_bits_they_use(tmp_path, capsys):
  ramp = (np.arange(32 * 32).reshape(32, 32, 1) * 4).astype(np.uint16)  # 0..4092: 12 bits
  (tmp_path / "sbit.png").write_bytes(_png(32, 32, 16, 0, ramp, sbit=[12]))
  image = pipeline.read_image(tmp_path / "sbit.png")
  assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.max() == 255
  assert "sbit.png is a 16-bit image whose data use 12 bits (its sBIT chunk)" in (
      capsys.readouterr().err)
  (tmp_path / "nosbit.png").write_bytes(_png(32, 32, 16, 0, ramp))
  assert pipeline.read_image(tmp_path / "nosbit.png").max() == 255
  assert "(its largest value is 4092)" in capsys.readouterr().err
  # 16-bit RGBA, half transparent: composited over white like a viewer shows it.
  rgba = np.zeros((8, 8, 4), np.uint16)
  rgba[..., 0], rgba[..., 3] = 4095, 2048
  (tmp_path / "rgba16.png").write_bytes(_png(8, 8, 16, 6, rgba, sbit=[12, 12, 12, 12]))
  np.testing.assert_allclose(pipeline.read_image(tmp_path / "rgba16.png")[0, 0],
                             [255, 128, 128], atol=1)
  assert "rgba16.png is a 16-bit image" in capsys.readouterr().err
  # Grey + alpha and grey, 8 bits; full-range 16 bits: as before, no notice.
  ga = np.zeros((8, 8, 2), np.uint8)
  ga[..., 0], ga[..., 1] = 100, 255
  (tmp_path / "ga.png").write_bytes(_png(8, 8, 8, 4, ga))
  np.testing.assert_array_equal(pipeline.read_image(tmp_path / "ga.png")[0, 0], [100] * 3)
  cv2.imwrite(str(tmp_path / "full.png"), np.full((8, 8, 3), 65535, np.uint16))
  assert pipeline.read_image(tmp_path / "full.png").min() == 255
  assert capsys.readouterr().err == ""


# --- the unclear cases: one error line, or a notice --------------------------------------


def test_a_png_claiming_100000x100000_pixels_is_refused_from_its_header(tmp_path):
  (tmp_path / "huge.png").write_bytes(_png(100000, 100000, 8, 2))
  with pytest.raises(ValueError, match=r"huge\.png is 100000x100000 pixels .* refused"):
    pipeline.read_image(tmp_path / "huge.png")


def test_a_very_large_photo_is_searched_on_a_scaled_copy(tmp_path, detector, monkeypatch,
                                                         capsys):
  photo = _photo(tmp_path / "big.png", h=120, w=160)
  monkeypatch.setattr(pipeline, "MAX_DETECT_PIXELS", 4800, raising=False)  # 80 x 60
  record = predict.run(None, photo, output_dir=tmp_path / "out")
  assert detector.seen == [(60, 80, 3)] and record["image_size"] == [160, 120]
  np.testing.assert_allclose(record["faces"][0]["box"], [40, 30, 120, 90], atol=0.6)
  assert "big.png is 160x120 pixels: faces are searched on a copy scaled to 80x60" in (
      capsys.readouterr().err)
  monkeypatch.setattr(pipeline, "MAX_IMAGE_PIXELS", 10000, raising=False)
  with pytest.raises(ValueError, match=r"big\.png is 160x120 pixels .* scale it down first"):
    pipeline.read_image(photo)


def test_devices_and_fifos_are_not_regular_files(tmp_path, detector, capsys):
  with pytest.raises(ValueError, match=r"/dev/zero is not a regular file"):
    pipeline.read_image("/dev/zero")
  with pytest.raises(ValueError, match=r"/dev/zero is not a regular file"):
    predict.run_video(None, "/dev/zero", tmp_path / "out")
  with pytest.raises(ValueError, match=r"/dev/zero is not a regular file"):
    predict.classify_paths(["/dev/zero"])
  photos = tmp_path / "photos"
  photos.mkdir()
  _photo(photos / "a.png")
  os.mkfifo(photos / "pipe.jpg")  # opening it would wait for a writer forever
  records = predict.run_folder(None, photos, tmp_path / "out")
  assert len(records) == 1 and [pathlib.Path(p).name for p, _ in records.skipped] == ["pipe.jpg"]
  assert "pipe.jpg is not a regular file" in capsys.readouterr().err


def test_non_finite_landmarks_are_null_and_the_face_marked_diverged(tmp_path, monkeypatch):
  config = methods.load_config(methods.resolve("cpr-300w"))

  class NaNPredictor:
    def __init__(self):
      self.config = config

    def predict(self, crops):
      lm = np.full((len(crops), 68, 2), 50.0)
      lm[:, 3] = np.nan
      lm[:, 7, 0] = np.inf
      return {"landmarks": lm}

  monkeypatch.setattr(methods, "load_predictor", lambda *a, **k: NaNPredictor())
  photo = _photo(tmp_path / "photo.png")
  predict.run("cpr-300w", photo, ["10,10,60,50"], tmp_path / "out",
              outputs=predict.Outputs(csv_files=True))
  text = (tmp_path / "out" / "photo_landmarks.json").read_text()

  def no_constants(name):
    raise ValueError(f"{name} in the JSON")

  face = json.loads(text, parse_constant=no_constants)["faces"][0]
  assert face["diverged"] is True
  assert face["landmarks"][3] == [None, None] and face["landmarks"][7][0] is None
  assert face["landmarks"][0] == [pytest.approx(face["landmarks"][0][0]),
                                  pytest.approx(face["landmarks"][0][1])]
  assert (tmp_path / "out" / "photo_landmarks.png").stat().st_size > 0
  assert "nan" not in (tmp_path / "out" / "photo_landmarks.csv").read_text().lower()
  drawn = pipeline.draw_faces(np.zeros((20, 20, 3), np.uint8), [pipeline.Face(
      box=np.array([np.nan, 0, 5, 5]), score=1.0, landmarks=np.array([[np.inf, 1.0], [5, 5]]))])
  assert drawn[5, 5, 0] == 255


def test_outputs_of_an_earlier_run_are_replaced_with_a_note(tmp_path, detector, capsys):
  photo, out = _photo(tmp_path / "photo.png"), tmp_path / "out"
  predict.run(None, photo, output_dir=out)
  assert "note:" not in capsys.readouterr().err
  predict.run(None, photo, output_dir=out)
  assert (f"note: replacing {out / 'photo_landmarks.json'} and 1 more file(s) in {out} "
          "from an earlier run") in capsys.readouterr().err
  assert not _partials(out)


@pytest.mark.parametrize("case", ["batch_size"] + [
    pytest.param(c, marks=pytest.mark.slow)
    for c in ("output_file", "huge_png", "dev_zero", "detector_mirror")])
def test_the_command_says_what_is_wrong_in_one_line(tmp_path, xla_cache, case):
  photo = tmp_path / "photo.png"
  cv2.imwrite(str(photo), np.zeros((48, 64, 3), np.uint8))
  out = tmp_path / "out"
  args, expected = {
      "batch_size": ([tmp_path, "--batch_size=-3"],
                     "error: --batch_size must be an integer >= 1; got -3"),
      "output_file": ([photo, f"--output_dir={photo}"], f"--output_dir {photo} is a file"),
      "huge_png": ([tmp_path / "huge.png"], "huge.png is 100000x100000 pixels"),
      "dev_zero": (["--image=/dev/zero", "--model=cpr-300w"], "/dev/zero is not a regular file"),
      "detector_mirror": ([photo, "--model=mtcnn-original", "--mirror"],
                          "--detector_setting=landmark_mirror=True"),
  }[case]
  (tmp_path / "huge.png").write_bytes(_png(100000, 100000, 8, 2))
  if case != "output_file":
    args.append(f"--output_dir={out}")
  line = _one_error_line(_cli(*args, cwd=tmp_path, cache=xla_cache))
  assert expected in line
  assert not out.exists()
