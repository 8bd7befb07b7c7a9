"""Similarity of two feature sets over the same frames, accumulated one chunk of frames at a time.

Both measures need only the column sums and the three Gram matrices XᵀX, YᵀY, YᵀX, so frames
never have to be held in memory all at once (float64 throughout):

- linear CKA (Kornblith et al., 2019, "Similarity of Neural Network Representations
  Revisited"): with centred features, CKA = ‖YᵀX‖²_F / (‖XᵀX‖_F · ‖YᵀY‖_F). 1 for identical
  features, and invariant to orthogonal transforms and isotropic scaling of either side.
- R² of the least-squares linear map (with intercept) that predicts Y from X:
  1 − Σ‖y − ŷ‖² / Σ‖y − ȳ‖², pooled over all output dimensions. 1 when Y is an affine function
  of X; needs more frames than X has dimensions to mean anything.
"""

import numpy as np


class Accumulator:
    """Running sums for CKA and R² between X (reference, e.g. θ0) and Y (compared model)."""

    def __init__(self):
        self.n = 0
        self.sx = self.sy = self.xx = self.yy = self.yx = None

    def update(self, x, y):
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"expected (frames, dims) arrays with the same frames, got {x.shape} and {y.shape}")
        if self.n == 0:
            self.sx, self.sy = np.zeros(x.shape[1]), np.zeros(y.shape[1])
            self.xx, self.yy = np.zeros((x.shape[1],) * 2), np.zeros((y.shape[1],) * 2)
            self.yx = np.zeros((y.shape[1], x.shape[1]))
        self.n += x.shape[0]
        self.sx += x.sum(0)
        self.sy += y.sum(0)
        self.xx += x.T @ x
        self.yy += y.T @ y
        self.yx += y.T @ x
        return self

    def _centred(self):
        if self.n == 0:
            raise ValueError("no frames accumulated")
        mx, my = self.sx / self.n, self.sy / self.n
        cxx = self.xx - self.n * np.outer(mx, mx)
        cyy = self.yy - self.n * np.outer(my, my)
        cyx = self.yx - self.n * np.outer(my, mx)
        return cxx, cyy, cyx

    def cka(self):
        cxx, cyy, cyx = self._centred()
        denominator = np.linalg.norm(cxx) * np.linalg.norm(cyy)
        if denominator <= 0:
            return float("nan")  # a constant feature set has no similarity structure
        return float(np.linalg.norm(cyx) ** 2 / denominator)

    def r2(self):
        cxx, cyy, cyx = self._centred()
        total = float(np.trace(cyy))
        if total <= 0:
            return float("nan")
        # Normal equations Cxx W = Cxy, minimum-norm solution when Cxx is singular (a layer norm
        # makes features sum to zero, so Cxx always has a null direction there).
        w = np.linalg.pinv(cxx, rcond=1e-10, hermitian=True) @ cyx.T
        residual = total - 2.0 * float(np.sum(w * cyx.T)) + float(np.sum(w * (cxx @ w)))
        return 1.0 - max(residual, 0.0) / total

    @property
    def dims(self):
        return None if self.sx is None else self.sx.shape[0]


def linear_cka(x, y):
    """Linear CKA between two (frames, dims) feature matrices."""
    return Accumulator().update(x, y).cka()


def linear_r2(x, y):
    """R² of the least-squares affine fit predicting y from x (pooled over y's dimensions)."""
    return Accumulator().update(x, y).r2()


def relative_change(new, base):
    """‖θ − θ0‖ / ‖θ0‖ over matching lists of tensors or arrays (one flat vector each side)."""
    num = sum(float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)) for a, b in zip(new, base))
    den = sum(float(np.sum(np.asarray(b, np.float64) ** 2)) for b in base)
    return float(np.sqrt(num / den)) if den > 0 else float("nan")
