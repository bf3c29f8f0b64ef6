"""Classical landmark methods as pure, jittable JAX functions over parameter pytrees.

- ``pdm``: point distribution model (Procrustes + PCA), shared by ASM and AAM.
- ``cpr``: cascaded pose regression (Dollar et al. 2010) with shape-indexed features
  and a ridge-regression cascade run with ``lax.scan`` (the fast baseline).
- ``asm``: active shape model (Cootes et al. 1995), multi-resolution profile search.
- ``aam``: active appearance model (Cootes et al. 1998), project-out inverse
  compositional fitting through a piecewise-affine warp.

Every ``fit``/``predict`` function is batched over faces and returns landmarks in
crop pixels together with a per-face ``diverged`` flag; a diverged face keeps finite
coordinates (its initial shape), never NaN.
"""
