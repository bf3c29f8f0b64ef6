"""The grain input pipeline: crop geometry, flips, splits, determinism, resume, shards."""

import cv2
import numpy as np
import pytest

from jaxmarks import data as ip
from jaxmarks import transforms
from jaxmarks import schemes
from jaxmarks import shapes
from tests import helpers
from tfds_builders.synthetic_faces import renderer as synthetic


def _config(**overrides):
  c = ip.get_data_config()
  c.batch_size = 4
  c.update(overrides)
  return c


@pytest.fixture(scope="module")
def records():
  """24 rendered faces as in-memory records (no TFDS)."""
  out = []
  for i in range(24):
    f = synthetic.render_face(synthetic.face_rng(11, i), size_range=(120, 150))
    out.append({"image": f.image, "landmarks": f.landmarks, "visible": np.ones(68, bool),
                "box": f.box, "filename": f"{i}.jpg"})
  return out


def _source(records, part="all", fraction=0.25, seed=0):
  return ip.IndexedSource(records, ip.split_indices(len(records), part, fraction, seed))


def _batches(loader, n):
  it = iter(loader)
  return [next(it) for _ in range(n)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# --- geometry --------------------------------------------------------------------------


def _dot_image(points, h=240, w=260):
  """Black image with a Gaussian dot (sigma 1.5 px) at every point; ``(H, W, 3)`` uint8."""
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  img = np.zeros((h, w))
  for x, y in points:
    img = np.maximum(img, np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2)))
  return np.repeat((img * 255).round().astype(np.uint8)[..., None], 3, -1)


def _centroid(crop, x, y, r=4):
  h, w = crop.shape[:2]
  x0, x1 = max(int(round(x)) - r, 0), min(int(round(x)) + r + 1, w)
  y0, y1 = max(int(round(y)) - r, 0), min(int(round(y)) + r + 1, h)
  patch = crop[y0:y1, x0:x1, 0].astype(np.float64)
  yy, xx = np.mgrid[y0:y1, x0:x1]
  return np.array([(patch * xx).sum(), (patch * yy).sum()]) / patch.sum()


@pytest.mark.parametrize("flip", [False, True])
def test_dots_land_on_their_transformed_landmarks(flip):
  rng = np.random.default_rng(0)
  pts = np.stack([rng.uniform(95, 165, 5), rng.uniform(85, 155, 5)], -1)
  pts[0] = (130.3, 120.7)
  image = _dot_image(pts)
  mirror = np.array([1, 0, 2, 4, 3])  # any involution: a 5-point scheme's mirror
  cfg = _config(grayscale=False, normalization="none", brightness=0.0, contrast=0.0,
                flip_prob=1.0 if flip else 0.0, image_size=96, crop_scale=1.6, translation=0.05,
                scale=0.1)
  record = {"image": image, "landmarks": pts, "box": np.array([90, 80, 170, 160.0])}
  out = ip.process_record(record, cfg, mirror, rng=np.random.default_rng(3))
  t = out["transform"]
  assert (np.linalg.det(t[:, :2]) < 0) == flip
  expected = transforms.apply_affine(t, pts)
  if flip:
    expected = expected[mirror]
  np.testing.assert_allclose(out["landmarks"], expected, atol=1e-3)
  for j, (x, y) in enumerate(out["landmarks"]):
    assert 5 <= x <= 90 and 5 <= y <= 90, f"point {j} left the crop: test setup"
    np.testing.assert_allclose(_centroid(out["image"], x, y), (x, y), atol=0.25,
                               err_msg=f"point {j}")
  # crop -> image maps back.
  np.testing.assert_allclose(transforms.apply_affine(transforms.invert_affine(t), out["landmarks"]),
                             pts[mirror] if flip else pts, atol=1e-3)


def test_crop_transform_matches_jaxmarks_transforms():
  from jaxmarks import transforms

  cfg = _config(image_size=112, crop_scale=2.0)
  box = np.array([40.0, 50.0, 100.0, 130.0])
  t = ip.crop_transform(box, cfg)
  centre = transforms.apply_affine(t, [[70.0, 90.0]])[0]
  np.testing.assert_allclose(centre, [55.5, 55.5], atol=1e-9)
  assert np.isclose(np.linalg.det(t[:, :2]), (112 / (2.0 * 80)) ** 2)
  pts = np.random.default_rng(0).uniform(0, 150, (7, 2))
  np.testing.assert_allclose(transforms.apply_affine(t, pts),
                             np.asarray(transforms.apply_affine(t, pts)), atol=1e-3)
  jitter = ip.crop_transform(box, _config(), rng=np.random.default_rng(0))
  scale = np.sqrt(abs(np.linalg.det(jitter[:, :2])))
  assert not np.allclose(jitter, t) and 0.3 < scale < 2.0


def test_crop_face_is_the_eval_crop_of_a_record(records):
  cfg = _config(box_source="box")
  rec = dict(records[0], index=0)
  crop, t = ip.crop_face(rec["image"], rec["box"], cfg)
  out = ip.process_record(rec, cfg, schemes.get_scheme("ibug68").mirror_array)
  np.testing.assert_array_equal(crop, out["image"])
  np.testing.assert_array_equal(t, out["transform"])
  assert crop.shape == (112, 112, 1) and crop.dtype == np.float32
  assert abs(crop.mean()) < 1e-4 and abs(crop.std() - 1) < 1e-3  # per-image normalised


def test_grayscale_and_rgb(records):
  rec = records[1]
  rgb = ip.process_record(rec, _config(grayscale=False, normalization="none"))
  gray = ip.process_record(rec, _config(grayscale=True, normalization="none"))
  assert rgb["image"].shape == (112, 112, 3) and gray["image"].shape == (112, 112, 1)
  expected = cv2.cvtColor(rgb["image"].astype(np.uint8), cv2.COLOR_RGB2GRAY)
  np.testing.assert_array_equal(gray["image"][..., 0], expected)
  unit = ip.process_record(rec, _config(grayscale=False, normalization="unit"))
  np.testing.assert_allclose(unit["image"], rgb["image"] / 255.0, atol=1e-6)
  # Grey-level and RGBA inputs are accepted.
  crop, _ = ip.crop_face(rec["image"][..., 0], rec["box"], _config())
  assert crop.shape == (112, 112, 1)


def test_flip_keeps_left_and_right_with_the_mirror_permutation(records):
  cfg = _config(translation=0.0, rotation=0.0, scale=0.0, brightness=0.0, contrast=0.0,
                normalization="none", flip_prob=1.0)
  mirror = schemes.get_scheme("ibug68").mirror_array
  for rec in records[:8]:
    plain = ip.process_record(rec, _config(normalization="none"))
    flipped = ip.process_record(rec, cfg, mirror, rng=np.random.default_rng(0))
    # The image is the mirror image of the unflipped crop (bilinear rounding aside).
    diff = np.abs(flipped["image"] - plain["image"][:, ::-1])
    assert diff.mean() < 1.0, diff.mean()
    lm, lm0 = flipped["landmarks"], plain["landmarks"]
    np.testing.assert_allclose(lm[:, 0], (111 - lm0[:, 0])[mirror], atol=1e-3)
    np.testing.assert_allclose(lm[:, 1], lm0[mirror, 1], atol=1e-3)
    # Point i still means the same feature on the image-left/right side as in the markup.
    roll = np.degrees(np.arctan2(*(lm[45] - lm[36])[::-1]))
    if abs(roll) < 45:
      assert lm[36, 0] < lm[45, 0] and lm[48, 0] < lm[54, 0] and lm[17, 0] < lm[26, 0]
    np.testing.assert_array_equal(flipped["visible"], rec["visible"][mirror])


def test_box_sources(records):
  rec = records[2]
  lm_box = ip.box_of_record(rec, _config(box_source="landmarks"))
  np.testing.assert_allclose(lm_box, [*rec["landmarks"].min(0), *rec["landmarks"].max(0)],
                             rtol=1e-6)
  np.testing.assert_array_equal(ip.box_of_record(rec, _config(box_source="box")), rec["box"])
  with pytest.raises(ValueError, match="box_source"):
    ip.process_record(rec, _config(box_source="detector"))
  bad = dict(rec, box=np.array([5.0, 5.0, 1.0, 9.0]))
  with pytest.raises(ValueError, match="'box'"):
    ip.box_of_record(bad, _config(box_source="box"))


def test_box_of_other_points(records):
  """``box_points``: the landmark box of the record's points converted to another
  scheme (a 5-point model on 68-point data is cropped as it was trained)."""
  rec = dict(records[2], visible=np.ones(68, bool))
  five = schemes.convert(rec["landmarks"], "ibug68", "mtfl5")
  box = ip.box_of_record(rec, _config(box_points="mtfl5"), "ibug68")
  np.testing.assert_allclose(box, [*five.min(0), *five.max(0)], rtol=1e-6)
  assert box[2] - box[0] < np.ptp(rec["landmarks"][:, 0])  # not the 68 points' box
  np.testing.assert_allclose(ip.box_of_record(rec, _config(box_points="ibug68"), "ibug68"),
                             ip.box_of_record(rec, _config(), "ibug68"))
  # A converted point is visible when all of its points are: hide the right eye's contour.
  rec["visible"][42:48] = False
  box = ip.box_of_record(rec, _config(box_points="mtfl5"), "ibug68")
  others = five[[0, 2, 3, 4]]
  np.testing.assert_allclose(box, [*others.min(0), *others.max(0)], rtol=1e-6)
  with pytest.raises(ValueError, match="box_points='mtfl5' needs the records' landmark scheme"):
    ip.box_of_record(rec, _config(box_points="mtfl5"))
  out = ip.process_record(rec, _config(box_points="mtfl5"), scheme="ibug68")
  np.testing.assert_allclose(out["box"], box, rtol=1e-5)
  # Five points -> the 68-point box they most likely have (as from a detector's five).
  rec5 = {"image": rec["image"], "landmarks": five}
  np.testing.assert_allclose(ip.box_of_record(rec5, _config(box_points="ibug68"), "mtfl5"),
                             shapes.landmark_box_from_points(five, "ibug68"))
  with pytest.raises(ValueError, match="no box of 'imm73' points from 'mtfl5' points"):
    ip.box_of_record(rec5, _config(box_points="imm73"), "mtfl5")


def test_mean_shape_in_crop(records):
  cfg = _config()
  shapes = np.stack([r["landmarks"] for r in records])
  mean = ip.mean_shape_in_crop(shapes, cfg)
  assert mean.shape == (68, 2)
  lo, hi = mean.min(0), mean.max(0)
  assert np.all(np.abs((lo + hi) / 2 - 55.5) < 3)  # box centre -> crop centre
  assert 50 < (hi - lo).max() < 60  # the larger side spans half of 112
  np.testing.assert_allclose(ip.mean_shape_in_crop(_source(records), cfg), mean, atol=1e-4)
  boxes = np.stack([r["box"] for r in records])
  by_box = ip.mean_shape_in_crop(shapes, _config(box_source="box"), boxes=boxes)
  assert np.abs(by_box - mean).max() < 10


# --- splits ----------------------------------------------------------------------------


def test_parse_split():
  assert ip.parse_split("train") == ("train", "all")
  assert ip.parse_split("train:fit") == ("train", "fit")
  assert ip.parse_split("train:holdout") == ("train", "holdout")
  with pytest.raises(ValueError, match="split spec"):
    ip.parse_split("train:valid")


def test_holdout_is_disjoint_exact_and_stable():
  n = 2012  # the shared 300-W train
  hold = ip.split_indices(n, "holdout", 0.1, 0)
  fit = ip.split_indices(n, "fit", 0.1, 0)
  assert len(hold) == 201 and len(fit) == n - 201
  assert not set(hold) & set(fit) and set(hold) | set(fit) == set(range(n))
  assert np.all(np.diff(hold) > 0)
  # Pinned: the partition must never change (every reported number uses it).
  np.testing.assert_array_equal(hold[:10], [1, 18, 25, 27, 43, 47, 58, 73, 75, 126])
  assert int(hold.sum()) == 193422
  np.testing.assert_array_equal(ip.split_indices(n, "holdout", 0.1, 0), hold)
  assert not np.array_equal(ip.split_indices(n, "holdout", 0.1, 1), hold)
  # Spread over the whole split, not a contiguous slice.
  assert np.histogram(hold, bins=4, range=(0, n))[0].min() > 30
  np.testing.assert_array_equal(ip.split_indices(5, "all", 0.1, 0), np.arange(5))


# --- loaders ---------------------------------------------------------------------------


def test_training_batches_are_deterministic_and_resumable(records):
  cfg = _config()
  src = _source(records)
  first = _batches(ip.make_loader(cfg, training=True, source=src, scheme="ibug68"), 4)
  again = _batches(ip.make_loader(cfg, training=True, source=src, scheme="ibug68"), 4)
  _assert_batches_equal(first, again)
  other = _batches(ip.make_loader(cfg, training=True, source=src, scheme="ibug68", seed=1), 1)
  assert not np.array_equal(other[0]["index"], first[0]["index"])
  b = first[0]
  assert b["image"].shape == (4, 112, 112, 1) and b["image"].dtype == np.float32
  assert b["landmarks"].shape == (4, 68, 2) and b["transform"].shape == (4, 2, 3)
  assert b["visible"].shape == (4, 68) and b["index"].dtype == np.int64 and b["mask"].all()
  # Resume: the state after 2 batches gives batches 3 and 4 again.
  it = iter(ip.make_loader(cfg, training=True, source=src, scheme="ibug68"))
  next(it), next(it)
  state = it.get_state()
  it2 = iter(ip.make_loader(cfg, training=True, source=src, scheme="ibug68"))
  it2.set_state(state)
  _assert_batches_equal([next(it2), next(it2)], first[2:4])
  # Augmented landmarks are still the transformed ground truth.
  for j in range(4):
    rec = records[int(b["index"][j])]
    lm = transforms.apply_affine(b["transform"][j], rec["landmarks"])
    if np.linalg.det(b["transform"][j][:, :2]) < 0:
      lm = lm[schemes.get_scheme("ibug68").mirror_array]
    np.testing.assert_allclose(b["landmarks"][j], lm, atol=1e-3)


def test_eval_pass_covers_every_record_once_in_order(records):
  cfg = _config(batch_size=5)
  src = _source(records, "holdout", fraction=0.5, seed=3)
  batches = list(ip.make_loader(cfg, training=False, source=src, scheme="ibug68"))
  assert [len(b["index"]) for b in batches] == [5, 5, 2]
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), src.indices)
  again = list(ip.make_loader(cfg, training=False, source=src, scheme="ibug68"))
  _assert_batches_equal(batches, again)
  rec = records[int(src.indices[0])]
  expected = ip.process_record(rec, cfg)
  np.testing.assert_array_equal(batches[0]["image"][0], expected["image"])
  cfg.eval_pad = True
  padded = list(ip.make_loader(cfg, training=False, source=src, scheme="ibug68"))
  assert [len(b["index"]) for b in padded] == [5, 5, 5]
  np.testing.assert_array_equal(padded[-1]["mask"], [True, True, False, False, False])
  np.testing.assert_array_equal(padded[-1]["index"][2:], [-1, -1, -1])
  np.testing.assert_array_equal(padded[-1]["image"][:2], batches[-1]["image"])


def test_shards_split_the_records(records):
  cfg = _config(batch_size=3)
  src = _source(records, "fit", fraction=0.25)
  got = []
  for shard in range(3):
    loader = ip.make_loader(cfg, training=False, source=src, scheme="ibug68",
                            shard_index=shard, shard_count=3)
    got.append(np.concatenate([b["index"] for b in loader]))
  assert [len(g) for g in got] == [6, 6, 6]
  np.testing.assert_array_equal(np.concatenate(got), src.indices)
  train = [next(iter(ip.make_loader(cfg, training=True, source=src, scheme="ibug68",
                                    shard_index=s, shard_count=2)))["index"] for s in (0, 1)]
  half = set(src.indices[:9].tolist())
  assert set(train[0].tolist()) <= half and not set(train[1].tolist()) & half
  with pytest.raises(ValueError, match="shard_index"):
    ip.make_loader(cfg, training=False, source=src, scheme="ibug68", shard_index=3,
                   shard_count=3)


@pytest.mark.slow
def test_a_worker_process_gives_the_same_batches(records):
  """grain worker processes (spawned) compute the same batches as the main process."""
  ip.parse_flags_with_defaults()  # grain's workers read absl flags; pytest parsed none
  cfg = _config()
  src = _source(records)
  local = _batches(ip.make_loader(cfg, training=True, source=src, scheme="ibug68"), 2)
  it = iter(ip.make_loader(cfg, training=True, source=src, scheme="ibug68", worker_count=1))
  first = next(it)
  state = it.get_state()
  _assert_batches_equal([first, next(it)], local)
  # A worker iterator resumes from its state too.
  it2 = iter(ip.make_loader(cfg, training=True, source=src, scheme="ibug68", worker_count=1))
  it2.set_state(state)
  _assert_batches_equal([next(it2)], local[1:])


def test_worker_count_auto_is_one_per_usable_core_less_one(monkeypatch):
  """num_workers -1 ("auto", the GPU configs') is the usable cores less one, at least 1."""
  from jaxmarks.data import config as data_config

  assert data_config.worker_count(0) == 0 and data_config.worker_count(3) == 3
  monkeypatch.setattr(data_config.os, "sched_getaffinity", lambda pid: set(range(16)),
                      raising=False)
  assert data_config.worker_count(-1) == 15
  monkeypatch.setattr(data_config.os, "sched_getaffinity", lambda pid: {0}, raising=False)
  assert data_config.worker_count(-1) == 1
  cfg = _config()
  cfg.num_workers = -2
  with pytest.raises(ValueError, match="num_workers"):
    data_config.check_data_config(cfg)  # make_loader's first step


def test_end_to_end_from_the_tiny_builder(tmp_path):
  builder = helpers.build_dataset("synthetic_faces", None, tmp_path, config="tiny")
  del builder
  cfg = _config(data_dir=str(tmp_path), builder_config="tiny", eval_split="train:holdout",
                batch_size=8)
  src, builder = ip.load_split(cfg, "train:holdout")
  assert len(src) == 5 and builder.info.metadata["scheme"] == "ibug68"
  batches = list(ip.make_loader(cfg, training=False))
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in batches]), src.indices)
  train = next(iter(ip.make_loader(cfg, training=True)))
  assert train["image"].shape == (8, 112, 112, 1)
  assert set(train["index"].tolist()) <= set(ip.split_indices(48, "all", 0.1, 0).tolist())
  with pytest.raises(ValueError, match="no split"):
    ip.load_split(cfg, "test")
  # Records come with encoded images decoded by OpenCV: RGB, gray or left encoded.
  rgb = src[0]["image"]
  gray = src.with_indices(src.indices, "gray")[0]["image"]
  encoded = src.with_indices(src.indices, "encoded")[0]["image"]
  assert rgb.shape[2] == 3 and gray.shape == (*rgb.shape[:2], 1) and isinstance(encoded, bytes)
  np.testing.assert_array_equal(ip.decode_image(encoded, "rgb"), rgb)
  expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
  assert np.abs(gray[..., 0].astype(int) - expected).mean() < 1.5  # libjpeg luma vs BT.601
  # The gray-decoded eval crop is the RGB crop converted (up to that rounding).
  via_gray = ip.process_record(src.with_indices(src.indices, "gray")[0], cfg)
  via_rgb = ip.process_record(src[0], cfg)
  assert np.abs(via_gray["image"] - via_rgb["image"]).mean() < 0.05
  mean = ip.mean_shape_in_crop(src, cfg)
  shapes = np.stack([src[j]["landmarks"] for j in range(len(src))])
  np.testing.assert_allclose(mean, ip.mean_shape_in_crop(shapes, cfg), atol=1e-4)


def test_extra_features_are_carried_and_relabelled_by_flips(records):
  rec = dict(records[0], pose=np.int64(1), glasses=np.int64(0))
  mirror = schemes.get_scheme("ibug68").mirror_array
  cfg = _config(extra_features=("pose", "glasses"), flip_prob=1.0)
  cfg.flip_feature_maps = {"pose": (4, 3, 2, 1, 0)}
  flipped = ip.process_record(rec, cfg, mirror, rng=np.random.default_rng(0))
  assert flipped["pose"] == 3 and flipped["glasses"] == 0  # left -> right; glasses stay
  assert flipped["pose"].dtype == np.int32
  plain = ip.process_record(rec, cfg, mirror, rng=None)
  assert plain["pose"] == 1
  batch = next(iter(ip.make_loader(cfg, training=True, source=ip.IndexedSource(
      [rec] * 8, np.arange(8)), scheme="ibug68")))
  assert batch["pose"].shape == (4,) and set(batch["pose"].tolist()) <= {1, 3}
  with pytest.raises(ValueError, match="extra_features names 'smile'"):
    ip.process_record(rec, _config(extra_features=("smile",)), mirror)
