"""Figures written at the end of runs: CED curves and landmark grids (PNG).

Figures are drawn on matplotlib's object API with an Agg canvas of their own
(``matplotlib.figure.Figure``), never through ``pyplot``: no global backend is
set, no figure registry is touched, and a notebook's own backend is left alone.
"""

from __future__ import annotations

import math
import pathlib
from typing import Mapping, Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np

from jaxmarks import metrics


def _figure(figsize, dpi) -> Figure:
  fig = Figure(figsize=figsize, dpi=dpi)
  FigureCanvasAgg(fig)
  return fig

__all__ = ["plot_ced", "plot_landmark_grid"]


def plot_ced(errors: Mapping[str, np.ndarray], path, threshold: float = 0.08,
             title: str = "", xlabel: str = "NME (inter-ocular)") -> pathlib.Path:
  """Cumulative error distribution curves, one per entry of ``errors``.

  Args:
    errors: name -> ``(N,)`` per-face NME (fractions); the legend shows each AUC.
    path: output PNG path.
    threshold: the x-axis limit and the AUC/failure threshold.
    title: figure title (name the split and normalisation).
    xlabel: x-axis label.

  Returns:
    the written path.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  xs = np.linspace(0.0, threshold, 161)
  fig = _figure((5.5, 4.2), 110)
  ax = fig.subplots()
  for name, e in errors.items():
    e = np.asarray(e, np.float64).reshape(-1)
    ys = np.asarray(metrics.ced(e, xs))
    auc = float(metrics.auc(e, threshold))
    ax.plot(xs, ys, label=f"{name} (NME {100 * e.mean():.2f}%, AUC {auc:.3f})")
  ax.set_xlim(0, threshold)
  ax.set_ylim(0, 1)
  ax.set_xlabel(xlabel)
  ax.set_ylabel("fraction of faces")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower right", fontsize=8)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  return path


def _display(image: np.ndarray) -> np.ndarray:
  """Any-normalised ``(S, S, C)`` crop -> ``[0, 1]`` for display (per-image min/max)."""
  img = np.asarray(image, np.float32)
  lo, hi = float(img.min()), float(img.max())
  img = (img - lo) / max(hi - lo, 1e-6)
  if img.shape[-1] == 1:
    img = img[..., 0]
  return img


def plot_landmark_grid(images: np.ndarray, predictions: np.ndarray,
                       ground_truth: np.ndarray | None = None, path="grid.png",
                       ncols: int = 4, titles: Sequence[str] | None = None,
                       title: str = "") -> pathlib.Path:
  """A grid of faces with predicted (red) and, if given, ground-truth (green) landmarks.

  Args:
    images: ``(N, S, S, C)`` crops (any normalisation; shown min/max-scaled).
    predictions: ``(N, K, 2)`` crop pixels.
    ground_truth: optional ``(N, K, 2)`` crop pixels.
    path: output PNG path.
    ncols: grid columns.
    titles: optional per-face captions (e.g. each face's NME).
    title: figure title.

  Returns:
    the written path.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  n = len(images)
  if n == 0:
    raise ValueError("plot_landmark_grid needs at least one image")
  ncols = max(1, min(ncols, n))
  nrows = math.ceil(n / ncols)
  fig = _figure((2.4 * ncols, 2.5 * nrows), 100)
  axes = fig.subplots(nrows, ncols, squeeze=False)
  for i, ax in enumerate(axes.reshape(-1)):
    ax.axis("off")
    if i >= n:
      continue
    img = _display(images[i])
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
    if ground_truth is not None:
      g = np.asarray(ground_truth[i])
      ax.scatter(g[:, 0], g[:, 1], s=4, c="lime", linewidths=0)
    p = np.asarray(predictions[i])
    ax.scatter(p[:, 0], p[:, 1], s=4, c="red", linewidths=0)
    if titles is not None:
      ax.set_title(titles[i], fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  return path
