"""Named landmark schemes: point names, eye indices and mirror permutations.

A scheme says what the K points of a shape mean. Metrics use it to find the
normalising distance (outer eye corners, pupils); augmentation uses its mirror
permutation so that a horizontally flipped face keeps point ``i`` meaning the
same facial feature.

Every index is 0-based. "Left"/"right" in point names follow each dataset's own
documentation; the mirror permutation does not depend on that convention, only on
which points are symmetric partners.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["Scheme", "get_scheme", "scheme_names", "SCHEMES", "can_convert", "convert"]


@dataclasses.dataclass(frozen=True)
class Scheme:
  """A landmark scheme.

  Attributes:
    name: short identifier, e.g. ``"ibug68"``.
    point_names: one name per point, length K.
    outer_eye_corners: ``(a, b)``, the two outer eye corner indices (for
      inter-ocular normalisation).
    left_eye: indices whose mean is one pupil / eye centre.
    right_eye: indices whose mean is the other pupil / eye centre.
    mirror: permutation of ``range(K)``: after flipping an image horizontally,
      point ``i`` of the flipped shape is point ``mirror[i]`` of the original.
    citation: where the definition comes from.
  """

  name: str
  point_names: tuple[str, ...]
  outer_eye_corners: tuple[int, int]
  left_eye: tuple[int, ...]
  right_eye: tuple[int, ...]
  mirror: tuple[int, ...]
  citation: str = ""

  @property
  def num_points(self) -> int:
    return len(self.point_names)

  @property
  def mirror_array(self) -> np.ndarray:
    return np.asarray(self.mirror, dtype=np.int32)

  def validate(self) -> None:
    k = self.num_points
    perm = sorted(self.mirror)
    if perm != list(range(k)):
      raise ValueError(f"scheme {self.name}: mirror is not a permutation of range({k})")
    if any(self.mirror[self.mirror[i]] != i for i in range(k)):
      raise ValueError(f"scheme {self.name}: mirror is not an involution")
    for idx in (*self.outer_eye_corners, *self.left_eye, *self.right_eye):
      if not 0 <= idx < k:
        raise ValueError(f"scheme {self.name}: index {idx} out of range for {k} points")


def _mirror_from_pairs(k: int, pairs: Sequence[tuple[int, int]]) -> tuple[int, ...]:
  perm = list(range(k))
  for a, b in pairs:
    perm[a], perm[b] = b, a
  return tuple(perm)


def _ring_pairs(a0: int, b0: int, n: int) -> list[tuple[int, int]]:
  """Pairs two closed contours of n points that run in opposite directions.

  Point ``a0`` pairs with ``b0``; then ``a0 + j`` with ``b0 + (n - j) % n``.
  """
  return [(a0 + j, b0 + (n - j) % n) for j in range(n)]


def _chain_pairs(start: int, n: int) -> list[tuple[int, int]]:
  """Pairs the ends of an open symmetric chain: start+j <-> start+n-1-j."""
  return [(start + j, start + n - 1 - j) for j in range(n // 2)]


# --- iBUG 68 (300-W) -------------------------------------------------------------
_IBUG68_NAMES = (
    [f"jaw_{i:02d}" for i in range(17)]
    + [f"right_brow_{i}" for i in range(5)]
    + [f"left_brow_{i}" for i in range(5)]
    + [f"nose_bridge_{i}" for i in range(4)]
    + [f"nose_base_{i}" for i in range(5)]
    + [f"right_eye_{i}" for i in range(6)]
    + [f"left_eye_{i}" for i in range(6)]
    + [f"outer_lip_{i:02d}" for i in range(12)]
    + [f"inner_lip_{i}" for i in range(8)]
)
_IBUG68_PAIRS = (
    _chain_pairs(0, 17)  # jaw
    + [(17 + j, 26 - j) for j in range(5)]  # brows
    + [(31, 35), (32, 34)]  # nostrils
    + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # eyes
    + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58)]  # outer lip
    + [(60, 64), (61, 63), (65, 67)]  # inner lip
)
IBUG68 = Scheme(
    name="ibug68",
    point_names=tuple(_IBUG68_NAMES),
    outer_eye_corners=(36, 45),
    left_eye=tuple(range(36, 42)),
    right_eye=tuple(range(42, 48)),
    mirror=_mirror_from_pairs(68, _IBUG68_PAIRS),
    citation="Sagonas et al., 300 Faces in-the-Wild Challenge, ICCVW 2013.",
)

# --- MTFL 5 (TCDCN) -----------------------------------------------------------------
MTFL5 = Scheme(
    name="mtfl5",
    point_names=("left_eye", "right_eye", "nose", "left_mouth_corner", "right_mouth_corner"),
    outer_eye_corners=(0, 1),  # MTFL has eye centres only: inter-ocular == inter-pupil.
    left_eye=(0,),
    right_eye=(1,),
    mirror=(1, 0, 2, 4, 3),
    citation="Zhang et al., Facial Landmark Detection by Deep Multi-task Learning, ECCV 2014.",
)

# --- IMM 58 (IMM Face Database, 240 images) -----------------------------------------
# Layout of the database's documentation (Stegmann et al. 2004, table 1): jaw 0-12,
# right eye 13-20, left eye 21-28, right brow 29-33, left brow 34-38, mouth 39-46,
# nose 47-57. Eye contours are closed 8-point paths that start at the outer corner;
# the two eyes run in opposite directions, as in the 73-point frontal set.
_IMM58_NAMES = (
    [f"jaw_{i:02d}" for i in range(13)]
    + [f"right_eye_{i}" for i in range(8)]
    + [f"left_eye_{i}" for i in range(8)]
    + [f"right_brow_{i}" for i in range(5)]
    + [f"left_brow_{i}" for i in range(5)]
    + [f"mouth_{i}" for i in range(8)]
    + [f"nose_{i:02d}" for i in range(11)]
)
IMM58 = Scheme(
    name="imm58",
    point_names=tuple(_IMM58_NAMES),
    outer_eye_corners=(13, 21),
    left_eye=tuple(range(13, 21)),
    right_eye=tuple(range(21, 29)),
    mirror=_mirror_from_pairs(
        58,
        _chain_pairs(0, 13)
        + _ring_pairs(13, 21, 8)
        + [(29 + j, 38 - j) for j in range(5)]
        + [(39, 43), (40, 42), (44, 46)]
        + _chain_pairs(47, 11),
    ),
    citation="Stegmann, Ersboll, Larsen, FAME - a flexible appearance modelling environment, "
    "IEEE TMI 2003; Nordstrom et al., The IMM Face Database, 2004.",
)

# --- IMM 73 (IMM frontal face database) --------------------------------------------
# Read off the .asf path structure: brows 0-7 / 8-15 (closed), eyes 16-23 / 24-31
# (closed, each starting at its outer corner, running in opposite directions),
# pupils 32 / 33, nose 34-44 (open) and nose tip 45, outer lip 46-55 (closed, from the
# left corner), inner upper lip 56-58, inner lower lip 59-61, jaw 62-72.
_IMM73_NAMES = (
    [f"brow_a_{i}" for i in range(8)]
    + [f"brow_b_{i}" for i in range(8)]
    + [f"eye_a_{i}" for i in range(8)]
    + [f"eye_b_{i}" for i in range(8)]
    + ["pupil_a", "pupil_b"]
    + [f"nose_{i:02d}" for i in range(11)]
    + ["nose_tip"]
    + [f"outer_lip_{i}" for i in range(10)]
    + [f"inner_upper_lip_{i}" for i in range(3)]
    + [f"inner_lower_lip_{i}" for i in range(3)]
    + [f"jaw_{i:02d}" for i in range(11)]
)
IMM73 = Scheme(
    name="imm73",
    point_names=tuple(_IMM73_NAMES),
    outer_eye_corners=(16, 24),
    left_eye=(32,),
    right_eye=(33,),
    mirror=_mirror_from_pairs(
        73,
        _ring_pairs(0, 8, 8)
        + _ring_pairs(16, 24, 8)
        + [(32, 33)]
        + _chain_pairs(34, 11)
        + [(46, 52), (47, 51), (48, 50), (53, 55)]
        + [(56, 58), (59, 61)]
        + _chain_pairs(62, 11),
    ),
    citation="Nordstrom, Larsen, Sierakowski, Stegmann, The IMM Face Database, 2004 "
    "(frontal set of 120 images, 73 points).",
)

# --- MUCT 76 (XM2VTS 68 + 8 extra eye points; left/right as seen by the viewer) ----
_MUCT76_NAMES = (
    ["l_temple"] + [f"l_jaw_{i}" for i in range(1, 7)] + ["chin"]
    + [f"r_jaw_{i}" for i in range(6, 0, -1)] + ["r_temple"]
    + ["r_brow_outer", "r_brow_outer_top", "r_brow_inner_top", "r_brow_inner",
       "r_brow_19", "r_brow_20"]
    + ["l_brow_outer", "l_brow_outer_top", "l_brow_inner_top", "l_brow_inner",
       "l_brow_25", "l_brow_26"]
    + ["l_eye_outer", "l_eye_top", "l_eye_inner", "l_eye_bottom", "l_pupil"]
    + ["r_eye_outer", "r_eye_top", "r_eye_inner", "r_eye_bottom", "r_pupil"]
    + ["l_nose_top", "l_nose_mid", "l_nose_bot0", "l_nose_bot1", "nose_base",
       "r_nose_bot1", "r_nose_bot0", "r_nose_mid", "r_nose_top"]
    + ["l_nostril", "r_nostril"]
    + ["l_mouth_corner", "mouth_49", "mouth_50", "top_of_top_lip", "mouth_52", "mouth_53",
       "r_mouth_corner", "mouth_55", "mouth_56", "bottom_of_bottom_lip", "mouth_58",
       "mouth_59", "mouth_60", "top_of_bottom_lip", "mouth_62", "mouth_63", "mouth_64",
       "mouth_65", "bottom_of_top_lip", "nose_tip"]
    + [f"l_eye_extra_{i}" for i in range(4)]
    + [f"r_eye_extra_{i}" for i in range(4)]
)
MUCT76 = Scheme(
    name="muct76",
    point_names=tuple(_MUCT76_NAMES),
    outer_eye_corners=(27, 32),
    left_eye=(31,),
    right_eye=(36,),
    mirror=_mirror_from_pairs(
        76,
        _chain_pairs(0, 15)
        + [(15 + j, 21 + j) for j in range(6)]
        + [(27 + j, 32 + j) for j in range(5)]
        + _chain_pairs(37, 9)
        + [(46, 47)]
        + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 62), (63, 65)]
        + [(68 + j, 72 + j) for j in range(4)],
    ),
    citation="Milborrow, Morkel, Nicolls, The MUCT Landmarked Face Database, PRASA 2010.",
)

# --- BioID 20 (FGnet markup) ---------------------------------------------------------
BIOID20 = Scheme(
    name="bioid20",
    point_names=(
        "right_pupil", "left_pupil", "right_mouth_corner", "left_mouth_corner",
        "right_brow_outer", "right_brow_inner", "left_brow_inner", "left_brow_outer",
        "right_temple", "right_eye_outer", "right_eye_inner", "left_eye_inner",
        "left_eye_outer", "left_temple", "nose_tip", "right_nostril", "left_nostril",
        "upper_lip_centre", "lower_lip_centre", "chin_tip",
    ),
    outer_eye_corners=(9, 12),
    left_eye=(0,),
    right_eye=(1,),
    mirror=_mirror_from_pairs(
        20, [(0, 1), (2, 3), (4, 7), (5, 6), (8, 13), (9, 12), (10, 11), (15, 16)]
    ),
    citation="Jesorsky, Kirchberg, Frischholz, Robust Face Detection Using the Hausdorff "
    "Distance, AVBPA 2001; 20-point FGnet markup.",
)

# --- AFLW 21 ---------------------------------------------------------------------------
AFLW21 = Scheme(
    name="aflw21",
    point_names=(
        "left_brow_left", "left_brow_center", "left_brow_right",
        "right_brow_left", "right_brow_center", "right_brow_right",
        "left_eye_left", "left_eye_center", "left_eye_right",
        "right_eye_left", "right_eye_center", "right_eye_right",
        "left_ear", "nose_left", "nose_center", "nose_right", "right_ear",
        "mouth_left", "mouth_center", "mouth_right", "chin_center",
    ),
    outer_eye_corners=(6, 11),
    left_eye=(7,),
    right_eye=(10,),
    mirror=_mirror_from_pairs(
        21, [(0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9), (12, 16), (13, 15), (17, 19)]
    ),
    citation="Koestinger, Wohlhart, Roth, Bischof, Annotated Facial Landmarks in the Wild, "
    "ICCVW 2011.",
)

SCHEMES: dict[str, Scheme] = {
    s.name: s for s in (IBUG68, MTFL5, IMM58, IMM73, MUCT76, BIOID20, AFLW21)
}
for _s in SCHEMES.values():
  _s.validate()


def scheme_names() -> list[str]:
  return sorted(SCHEMES)


def get_scheme(scheme: str | Scheme) -> Scheme:
  """Returns the named scheme (a ``Scheme`` passes through)."""
  if isinstance(scheme, Scheme):
    return scheme
  try:
    return SCHEMES[scheme]
  except KeyError:
    raise ValueError(
        f"unknown landmark scheme {scheme!r}; known schemes: {', '.join(scheme_names())}"
    ) from None


# --- Conversions between schemes ----------------------------------------------------
# target point -> the source points whose mean it is. iBUG 68 -> MTFL 5: the eye centres
# are the means of the eye contours (36-41 is the eye on the image's left, as MTFL's
# first point), the nose tip is point 30, the mouth corners 48 and 54.
_CONVERSIONS: dict[tuple[str, str], tuple[tuple[int, ...], ...]] = {
    ("ibug68", "mtfl5"): (tuple(range(36, 42)), tuple(range(42, 48)), (30,), (48,), (54,)),
}


def can_convert(source: str, target: str) -> bool:
  """Whether ``convert(shapes, source, target)`` is defined (the same scheme always is)."""
  return source == target or (source, target) in _CONVERSIONS


def convert(shapes, source: str, target: str):
  """Shapes ``(..., K_source, 2)`` of scheme ``source`` -> ``(..., K_target, 2)`` of ``target``.

  Each target point is the mean of some source points (``_CONVERSIONS``), so 68-point
  shapes can be compared with 5-point ones (MTFL-style errors of a 68-point method,
  300-W evaluation of a 5-point method). NumPy in, NumPy out; JAX arrays otherwise.
  """
  if source == target:
    return shapes
  if (source, target) not in _CONVERSIONS:
    raise ValueError(f"no conversion from scheme {source!r} to {target!r}; defined: "
                     f"{', '.join(f'{a}->{b}' for a, b in _CONVERSIONS)}")
  from jaxmarks.transforms import array_namespace  # pylint: disable=g-import-not-at-top
  xp = array_namespace(shapes)
  shapes = xp.asarray(shapes)
  k = get_scheme(source).num_points
  if shapes.shape[-2] != k:
    raise ValueError(f"shapes have {shapes.shape[-2]} points; scheme {source!r} has {k}")
  return xp.stack([shapes[..., list(idx), :].mean(axis=-2) for idx in _CONVERSIONS[
      (source, target)]], axis=-2)
