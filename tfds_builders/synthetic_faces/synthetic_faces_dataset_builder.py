"""TFDS builder ``synthetic_faces``: rendered faces with exact iBUG-68 landmarks.

Needs no download and no manual directory: every image is drawn by
``jaxmarks.synthetic.render_face`` (see that module for what varies). It is the
data of the README's main job and of fast tests. The faces are synthetic
drawings, so scores on them only show that a method works; for real numbers use
the 300-W builder (``ibug300w``).

Example ``i`` of split ``s`` is ``render_face(face_rng(seed + offset[s], i))``:
it depends only on the config's seed, the split and ``i``, so a data set can be
rebuilt bit-identically (same numpy / OpenCV versions) and grown without
changing its first examples. Splits of 1,000 or more are rendered by 2 worker
processes (``JAXMARKS_SYNTHETIC_WORKERS=n`` overrides; 1 = in process). Records are stored unshuffled: record ``i`` of a
split is example ``i`` (``filename`` = ``"<split>/<i:06d>.jpg"``).

Features: the common ``image``, ``landmarks`` ``(68, 2)``, ``box`` ``(4,)``,
``visible`` ``(68,)`` (all True: every point is annotated, also behind an
occluder, as in 300-W), ``filename``; plus ``occluded`` ``(68,)`` bool, True
where a drawn occluder covers the point. ``box`` is detector-like: the landmark
box, made square-ish, enlarged by ~5% and shifted by ~3% at random.

Configs (``tfds.builder("synthetic_faces/<config>")``):

* ``default``: 4,000 train + 500 validation faces (the main job's data).
* ``small``: 800 + 200, for quick experiments.
* ``tiny``: 48 + 16, for tests.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os

import cv2
import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.synthetic_faces import renderer as synthetic

_SPLIT_OFFSETS = {"train": 0, "validation": 1_000_003, "test": 2_000_003}
_JPEG_QUALITY = 92


@dataclasses.dataclass
class SyntheticFacesConfig(tfds.core.BuilderConfig):
  """How many faces per split, and the seed they are drawn from."""

  num_train: int = 4000
  num_validation: int = 500
  num_test: int = 0
  seed: int = 0
  occlusion_prob: float = 0.4


class Builder(tfds.core.GeneratorBasedBuilder):
  """Synthetic faces with 68 iBUG landmarks."""

  name = "synthetic_faces"
  VERSION = tfds.core.Version("1.1.0")
  RELEASE_NOTES = {
      "1.0.0": "First version.",
      "1.1.0": "Faster renderer (noise, compositing, sampling): different pixels and faces.",
  }
  BUILDER_CONFIGS = [
      SyntheticFacesConfig(name="default", description="4,000 train + 500 validation faces."),
      SyntheticFacesConfig(name="small", description="800 train + 200 validation faces.",
                           num_train=800, num_validation=200),
      SyntheticFacesConfig(name="tiny", description="48 train + 16 validation faces (tests).",
                           num_train=48, num_validation=16),
  ]
  DEFAULT_CONFIG_NAME = "default"

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
            "landmarks": tfds.features.Tensor(shape=(68, 2), dtype=np.float32),
            "box": tfds.features.Tensor(shape=(4,), dtype=np.float32),
            "visible": tfds.features.Tensor(shape=(68,), dtype=np.bool_),
            "occluded": tfds.features.Tensor(shape=(68,), dtype=np.bool_),
            "filename": tfds.features.Text(),
        }),
        supervised_keys=None,
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(scheme="ibug68"),
        homepage="https://github.com/jaxmarks/jaxmarks",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    cfg = self.builder_config
    counts = {"train": cfg.num_train, "validation": cfg.num_validation, "test": cfg.num_test}
    return {split: self._generate_examples(split, n) for split, n in counts.items() if n > 0}

  def _generate_examples(self, split: str, num: int):
    cfg = self.builder_config
    seed = cfg.seed + _SPLIT_OFFSETS[split]
    jobs = [(seed, i, split, cfg.occlusion_prob) for i in range(num)]
    workers = num_build_workers(num)
    if workers <= 1:
      yield from map(make_example, *zip(*jobs))
      return
    # Each example depends only on (seed, i), so rendering in worker processes gives the
    # same records in the same order. "spawn": the parent may hold JAX threads.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
      yield from pool.imap(_make_example_star, jobs, chunksize=32)


def num_build_workers(num: int) -> int:
  """Worker processes for rendering: ``$JAXMARKS_SYNTHETIC_WORKERS`` or up to 2 (1 if small)."""
  env = os.environ.get("JAXMARKS_SYNTHETIC_WORKERS")
  if env:
    return max(1, int(env))
  if num < 1000:  # starting processes costs more than it saves
    return 1
  return max(1, min(2, os.cpu_count() or 1))


def _make_example_star(args):
  return make_example(*args)


def make_example(seed: int, index: int, split: str, occlusion_prob: float = 0.4):
  """Renders example ``index`` and encodes it as a record of this builder."""
  face = synthetic.render_face(synthetic.face_rng(seed, index), occlusion_prob=occlusion_prob)
  ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(face.image, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
  if not ok:
    raise RuntimeError(f"JPEG encoding failed for {split} example {index}")
  return index, {
      "image": jpeg.tobytes(),
      "landmarks": face.landmarks.astype(np.float32),
      "box": face.box.astype(np.float32),
      "visible": np.ones((synthetic.NUM_POINTS,), np.bool_),  # every point is annotated
      "occluded": face.occluded.astype(np.bool_),
      "filename": f"{split}/{index:06d}.jpg",
  }
