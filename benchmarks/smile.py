r"""Smile or not on MTFL ``train:holdout``: EmotionalDAN against TCDCN's smile head and a
logistic regression on the landmarks alone, in one table.

  python -m benchmarks.smile --emotional=RUN[,RUN...] [--tcdcn=RUN] [--mirror]

Rows:

- EmotionalDAN (``--emotional``, one or more workdirs): its class probabilities on
  each held-out MTFL face, cropped as the evaluation crops a 68-point model's MTFL
  faces (the 68-point box the five annotated points most likely have);
- TCDCN (``--tcdcn``): the smile head of the multi-task network (``attributes``; never
  mirror-averaged);
- logistic regression on landmarks: the first EmotionalDAN's own 68 predicted points
  on MTFL ``train:fit`` (each shape aligned to their mean by a similarity and
  standardised), an L2-regularised logistic regression fitted on them and scored on
  the held-out faces' predicted points: what the landmarks alone tell.

Each row: accuracy, each class's recall and the faces scored. MTFL's ``train:holdout``
is held out of every training here (the pseudo-labels too are made from ``train:fit``).
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
import numpy as np

FLAGS = flags.FLAGS
CLASSES = ("smiling", "not_smiling")


def define_flags() -> None:
  flags.DEFINE_list("emotional", [], "EmotionalDAN workdirs (the first also gives the "
                    "landmarks of the logistic regression).")
  flags.DEFINE_string("tcdcn", "", "A TCDCN workdir (its smile head).")
  flags.DEFINE_float("l2", 1.0, "The logistic regression's L2 weight.")
  flags.DEFINE_string("disagreements", "", "Write the held-out faces on which the first "
                      "EmotionalDAN most confidently disagrees with MTFL's label to this PNG "
                      "(to look at the labels: research data, never commit it).")
  flags.DEFINE_integer("num_disagreements", 48, "Faces in --disagreements.")
  flags.DEFINE_bool("mirror", False, "Test-time mirroring: each face's probabilities (and "
                    "landmarks) averaged with its mirror image's (jaxmarks.mirror).")


def _mtfl(predictor):
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  data = evaluation.eval_data_config(predictor.config, dataset="mtfl")
  with data.unlocked():
    data.extra_features = ("smile",)
  return data


def _run(predictor, split: str, images: list | None = None):
  """``(landmarks (N, K, 2), smile labels (N,), model outputs)`` over MTFL ``split``;
  the crops are appended to ``images`` if given."""
  from jaxmarks import data as data_lib  # pylint: disable=g-import-not-at-top
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  from jaxmarks.data import builders  # pylint: disable=g-import-not-at-top
  data = _mtfl(predictor)
  scheme, trained, _ = evaluation._schemes(predictor, data, None)  # pylint: disable=protected-access
  data = evaluation._with_box_points(data, scheme, trained)  # pylint: disable=protected-access
  source, builder = data_lib.load_split(data, split)
  loader = data_lib.make_loader(data, split, training=False, source=source,
                                scheme=builders.scheme_of(builder), batch_size=64,
                                worker_count=0)
  lms, labels, probs = [], [], []
  for batch in loader:
    out = predictor.predict(np.asarray(batch["image"], np.float32))
    if images is not None:
      images.append(np.asarray(batch["image"]))
    lms.append(np.asarray(out["landmarks"]))
    labels.append(np.asarray(batch["smile"]))
    p = out.get("probabilities")
    if p is None and "attributes" in out:
      p = out["attributes"]["smile"]
    probs.append(np.asarray(p))
  return np.concatenate(lms), np.concatenate(labels), np.concatenate(probs)


def aligned_features(shapes: np.ndarray, reference: np.ndarray) -> np.ndarray:
  """``(N, 2K)``: each ``(K, 2)`` shape mapped onto ``reference`` by its least-squares
  similarity, flattened."""
  from jaxmarks import transforms  # pylint: disable=g-import-not-at-top
  t = np.asarray(transforms.estimate_similarity(shapes, np.broadcast_to(reference,
                                                                        shapes.shape)))
  out = np.einsum("nij,nkj->nki", t[:, :, :2], shapes) + t[:, None, :, 2]
  return out.reshape(len(shapes), -1)


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 200):
  """``(w (D,), b)`` of an L2-regularised logistic regression (Newton's method) of
  ``y`` in {0, 1} on ``x`` ``(N, D)``."""
  n, d = x.shape
  xb = np.concatenate([x, np.ones((n, 1))], 1)
  w = np.zeros(d + 1)
  reg = l2 * np.eye(d + 1)
  reg[-1, -1] = 0.0
  for _ in range(steps):
    p = 1 / (1 + np.exp(-xb @ w))
    grad = xb.T @ (p - y) + reg @ w
    hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg
    step = np.linalg.solve(hess, grad)
    w -= step
    if np.abs(step).max() < 1e-8:
      break
  return w[:-1], w[-1]


def _disagreements(images, landmarks, labels, probs, path: str, n: int, name: str) -> None:
  """The ``n`` faces whose labelled class the model gives the lowest probability, with
  the label and the model's probability of smiling, as a PNG grid."""
  from jaxmarks import plotting  # pylint: disable=g-import-not-at-top
  p_label = probs[np.arange(len(labels)), labels]
  worst = np.argsort(p_label)[:n]
  titles = [f"label: {CLASSES[labels[i]]}; p(smiling) {probs[i, 0]:.2f}" for i in worst]
  plotting.plot_landmark_grid(images[worst], landmarks[worst], path=path, ncols=8,
                              titles=titles, title=f"{name}: the {n} most confident "
                              "disagreements with MTFL's smile label (train:holdout)")
  print(f"wrote {path}: {int((p_label < 0.1).sum())} of {len(labels)} faces get < 0.1 "
        "for their labelled class", flush=True)


def _row(name: str, probs: np.ndarray, labels: np.ndarray) -> tuple[str, float]:
  """``(the table row, the accuracy)``."""
  from jaxmarks import evaluation  # pylint: disable=g-import-not-at-top
  c = evaluation.classification_summary(probs, labels, CLASSES, "smile")
  return (f"| {name} | {100 * c['accuracy']:.2f} % | "
          + " | ".join(f"{100 * c['recall'][k]:.2f} %" for k in CLASSES) + f" | {c['n']} |",
          c["accuracy"])


def main(argv) -> None:
  del argv
  from jaxmarks import methods  # pylint: disable=g-import-not-at-top
  if not FLAGS.emotional and not FLAGS.tcdcn:
    raise app.UsageError("give --emotional and/or --tcdcn")
  from jaxmarks import mirror  # pylint: disable=g-import-not-at-top
  load = lambda path: (mirror.MirrorAveraged(methods.load_predictor(path)) if FLAGS.mirror  # noqa: E731
                       else methods.load_predictor(path))
  rows, accuracies = [], []
  for i, workdir in enumerate(FLAGS.emotional):
    predictor = load(workdir)
    crops = [] if i == 0 and FLAGS.disagreements else None
    lm, labels, probs = _run(predictor, "train:holdout", crops)
    if crops:
      _disagreements(np.concatenate(crops), lm, labels, probs, FLAGS.disagreements,
                     FLAGS.num_disagreements, workdir)
    row, accuracy = _row(f"EmotionalDAN ({workdir})", probs, labels)
    rows.append(row)
    accuracies.append(accuracy)
    if i == 0:
      fit_lm, fit_labels, _ = _run(predictor, "train:fit")
      reference = fit_lm.mean(0)
      xf, xh = aligned_features(fit_lm, reference), aligned_features(lm, reference)
      mu, sd = xf.mean(0), xf.std(0) + 1e-6
      y = (fit_labels == 1).astype(np.float64)  # 1: not smiling
      w, b = logistic_regression((xf - mu) / sd, y, FLAGS.l2)
      p1 = 1 / (1 + np.exp(-(((xh - mu) / sd) @ w + b)))
      rows.append(_row(f"logistic regression on its landmarks ({len(fit_lm)} train:fit faces)",
                       np.stack([1 - p1, p1], 1), labels)[0])
  if FLAGS.tcdcn:
    # (never mirrored: its attributes include the head pose, which mirroring changes)
    _, labels, probs = _run(methods.load_predictor(FLAGS.tcdcn), "train:holdout")
    rows.append(_row(f"TCDCN's smile head ({FLAGS.tcdcn})", probs, labels)[0])
  print("MTFL train:holdout, smiling or not (accuracy; each class's recall)"
        + (", mirror-averaged" if FLAGS.mirror else ""))
  print("`python -m benchmarks.smile " + " ".join(sys.argv[1:]) + "`\n")
  print("| model | accuracy | recall, smiling | recall, not smiling | faces |")
  print("|---|---|---|---|---|")
  for row in rows:
    print(row)
  if len(accuracies) > 1:
    print(f"\nEmotionalDAN, mean of {len(accuracies)} runs: {100 * np.mean(accuracies):.2f} % ("
          + " / ".join(f"{100 * a:.2f}" for a in accuracies) + ")")


if __name__ == "__main__":
  define_flags()
  app.run(main)
