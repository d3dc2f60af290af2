"""The CPU crop kernel behind :func:`imgmdp_env.views.render_views`, compiled by numba.

It computes exactly what the portable torch path in :mod:`imgmdp_env.views` computes (the tests
compare the two bit for bit), but in one compiled call per batch: the torch path spends ~40
small tensor ops on the taps, which cost more than the views themselves below ~16 views.

Per view: the pyramid level (the first at which the view shrinks its region by less than 2x),
then the separable taps, each a pair ``(lo, lo + 1)`` of pixels in the level's padded
coordinates with an 8-bit weight ``wt`` in ``[0, 256]`` on ``lo + 1``; taps past an edge put
all their weight on the fill border, so a pair never leaves the padded level. Per output row,
the two source rows it needs are blended horizontally (a scalar loop gathers the packed RGBA
taps, a vectorised loop blends them), then vertically into the view. Consecutive output rows
often share source rows (always when the view enlarges its region, often below 2x shrink), so a
blended row is kept and reused: on the boxes a random policy visits, about 40% of the rows a
naive 4-tap loop would blend. The arithmetic is in float32 but exact, the fixed-point products
and sums being integers below 2**24: ``(top * (256 - wy) + bottom * wy + 2**15) >> 16`` with
``top = p00 * (256 - wx) + p01 * wx``. Indices are unsigned so that numba adds no
negative-index wrap-around, which keeps LLVM from vectorising.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - views.py then uses its torch path (same views)
    numba = None

render_u8 = None  # (buf, table, n_levels, image_idx, boxes, antialias, out) -> out

if numba is not None:

    @numba.njit(cache=True, inline="always", boundscheck=False)
    def _taps(start, extent, n, limit, lo, wt):  # pragma: no cover - compiled
        """The ``n`` taps of ``[start, start + extent]`` (normalised) over ``limit`` pixels."""
        fn, fl = np.float32(n), np.float32(limit)
        for k in range(n):
            t = (np.float32(k) + np.float32(0.5)) / fn  # pixel centres, as torch computes them
            pos = (start + extent * t) * fl - np.float32(0.5)
            i0 = np.floor(pos)
            if i0 >= fl:  # past the far edge: all on the border pixel limit + 1
                lo[k], wt[k] = np.uint64(limit), np.float32(256.0)
            elif i0 >= np.float32(-1.0):
                lo[k], wt[k] = np.uint64(np.int64(i0) + 1), np.rint((pos - i0) * np.float32(256))
            else:  # before the near edge (or NaN): all on the border pixel 0
                lo[k], wt[k] = np.uint64(0), np.float32(0.0)

    @numba.njit(cache=True, inline="always", boundscheck=False)
    def _row(buf, r, x_lo, wx, p0, p1, dst):  # pragma: no cover - compiled
        """Source row ``r`` blended horizontally: ``dst[c, j] = p0 * (256 - wx) + p1 * wx``."""
        one, f256 = np.uint64(1), np.float32(256.0)
        for j in range(len(x_lo)):  # the gathers: scalar loads
            c = r + x_lo[j]
            p0[j], p1[j] = buf[c], buf[c + one]
        for j in range(len(x_lo)):  # the blend: vectorised
            fx = wx[j]
            gx = f256 - fx
            a, c = p0[j], p1[j]
            dst[0, j] = np.float32(a & 255) * gx + np.float32(c & 255) * fx
            dst[1, j] = np.float32((a >> 8) & 255) * gx + np.float32((c >> 8) & 255) * fx
            dst[2, j] = np.float32((a >> 16) & 255) * gx + np.float32((c >> 16) & 255) * fx

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def render_u8(buf, table, n_levels, image_idx, boxes, antialias, out):  # pragma: no cover
        """buf: (P,) int32 packed RGBA; table: (N, L, 4) int64 offset, stride, H, W per level;
        n_levels: (N,) int64; image_idx: (B,) int64; boxes: (B, 4) float32 cxcywh;
        out: (B, 3, h, w) uint8, written and returned."""
        n, _, h, w = out.shape
        x_lo, wx = np.empty(w, np.uint64), np.empty(w, np.float32)
        y_lo, wy = np.empty(h, np.uint64), np.empty(h, np.float32)
        p0, p1 = np.empty(w, np.int32), np.empty(w, np.int32)
        ring = np.empty((2, 3, w), np.float32)  # horizontally blended rows lo and lo + 1
        n_images = len(n_levels)
        f256, half, inv = np.float32(256.0), np.float32(32768.0), np.float32(1.0 / 65536.0)
        for b in range(n):
            im = image_idx[b]
            if im < 0:
                im += n_images  # negative indices count from the end, as in torch
            if im < 0 or im >= n_images:
                raise IndexError("image index out of range")
            cx, cy, bw, bh = boxes[b, 0], boxes[b, 1], boxes[b, 2], boxes[b, 3]
            level = 0
            if antialias:
                sx = bw * np.float32(table[im, 0, 3]) / np.float32(w)
                sy = bh * np.float32(table[im, 0, 2]) / np.float32(h)
                shrink, step = max(sx, sy), np.float32(2.0)
                while level < n_levels[im] - 1 and shrink >= step:
                    level += 1
                    step *= np.float32(2.0)
            offset, stride = np.uint64(table[im, level, 0]), np.uint64(table[im, level, 1])
            _taps(cx - bw / np.float32(2.0), bw, w, table[im, level, 3], x_lo, wx)
            _taps(cy - bh / np.float32(2.0), bh, h, table[im, level, 2], y_lo, wy)
            have = np.uint64(table[im, level, 2] + 3)  # the row in ring[top] (none yet)
            top = 0
            for i in range(h):
                y = y_lo[i]
                if y != have:  # rows lo, lo + 1 are blended horizontally once, then reused
                    if y == have + np.uint64(1):
                        top = 1 - top
                    else:
                        _row(buf, offset + y * stride, x_lo, wx, p0, p1, ring[top])
                    _row(buf, offset + (y + np.uint64(1)) * stride, x_lo, wx, p0, p1, ring[1 - top])
                    have = y
                upper, lower = ring[top], ring[1 - top]
                fy = wy[i]
                gy = f256 - fy
                o0, o1, o2 = out[b, 0, i], out[b, 1, i], out[b, 2, i]
                for j in range(w):  # the vertical blend: contiguous, vectorised
                    o0[j] = np.uint8((upper[0, j] * gy + lower[0, j] * fy + half) * inv)
                    o1[j] = np.uint8((upper[1, j] * gy + lower[1, j] * fy + half) * inv)
                    o2[j] = np.uint8((upper[2, j] * gy + lower[2, j] * fy + half) * inv)
        return out
