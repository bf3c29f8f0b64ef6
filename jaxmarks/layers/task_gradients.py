"""How auxiliary tasks' gradients join the main task's at a shared layer.

A multi-task network computes one shared representation and several heads on it.
Plain autodiff adds the heads' gradients at the shared layer; an auxiliary task whose
gradient points against the main task's then pulls the shared layers away from it.
:func:`fan_out` returns copies of the shared features, one per head; its backward
pass sees every head's gradient at once and combines them by ``mode``:

- ``"sum"``: the plain sum (what autodiff does without this function).
- ``"project"``: per example, the component of each auxiliary gradient that points
  against the main task's gradient is removed (projected onto the plane normal to
  it), as PCGrad does between tasks (Yu et al., "Gradient Surgery for Multi-Task
  Learning", NeurIPS 2020), here only for the auxiliary tasks and at the features.
- ``"drop"``: per example, an auxiliary gradient with a negative cosine to the main
  task's is dropped whole, as Du et al. do for auxiliary losses ("Adapting Auxiliary
  Losses Using Gradient Similarity", 2018), at the features instead of the weights.

The first copy is the main task's; the gradient of the main task itself is never
changed, and the heads' own parameters get their plain gradients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

__all__ = ["MODES", "combine", "fan_out"]

MODES = ("sum", "project", "drop")


def combine(main, aux, mode: str):
  """The gradient at the shared features.

  Args:
    main: ``(B, D)`` the main task's gradient with respect to the shared features.
    aux: ``(T, B, D)`` each auxiliary task's (already weighted by its loss weight).
    mode: one of :data:`MODES`.

  Returns:
    ``(B, D)``: ``main`` plus the auxiliary gradients combined by ``mode``.
  """
  if mode not in MODES:
    raise ValueError(f"unknown gradient combination {mode!r}; known: {', '.join(MODES)}")
  if mode == "sum":
    return main + aux.sum(0)
  dot = jnp.sum(aux * main[None], axis=-1, keepdims=True)  # (T, B, 1)
  if mode == "drop":
    return main + jnp.where(dot < 0, 0.0, aux).sum(0)
  norm2 = jnp.sum(main * main, axis=-1, keepdims=True)[None]
  coef = jnp.where(dot < 0, dot / jnp.maximum(norm2, 1e-30), 0.0)
  return main + (aux - coef * main[None]).sum(0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def fan_out(x, copies: int, mode: str):
  """``copies`` identical outputs of ``x`` ``(B, D)``; the first is the main task's.
  The backward pass combines their cotangents with :func:`combine`."""
  return tuple(x for _ in range(copies))


def _fan_out_fwd(x, copies, mode):
  return fan_out(x, copies, mode), None


def _fan_out_bwd(copies, mode, _, cts):
  del copies
  main = cts[0]
  if len(cts) == 1:
    return (main,)
  return (combine(main, jnp.stack(cts[1:]), mode),)


fan_out.defvjp(_fan_out_fwd, _fan_out_bwd)
