"""Boxes on the latent grids: the coding tiles and transform windows that cut an image, with the
context around each. Pure index arithmetic, shared by the codec and the encoder effort."""

from __future__ import annotations

Box = tuple[int, int, int, int]  # top, left, bottom, right, in elements of the latent y (or of z)


def boxes(rows: int, cols: int, side: int, side_cols: int | None = None) -> list[Box]:
    """A grid of boxes `side` elements a side (`side` x `side_cols` if given) over a rows x cols grid,
    row-major."""
    across = side if side_cols is None else side_cols
    return [(top, left, min(top + side, rows), min(left + across, cols))
            for top in range(0, rows, side) for left in range(0, cols, across)]


def grow(box: Box, margin: int, rows: int, cols: int) -> Box:
    """`box` with `margin` elements around it, within a rows x cols grid."""
    return max(box[0] - margin, 0), max(box[1] - margin, 0), min(box[2] + margin, rows), min(box[3] + margin, cols)


def windows(rows: int, cols: int, side: int, margin: int) -> list[tuple[Box, Box]]:
    """(kept box, window box) pairs: each kept box with `margin` elements around it, within the grid."""
    return [(box, grow(box, margin, rows, cols)) for box in boxes(rows, cols, side)]


def _spans(n: int, side: int, margin: int) -> int:
    """Elements of a line of n cut into spans of `side`, each with `margin` around it, counted together."""
    return sum(min(start + side + margin, n) - max(start - margin, 0) for start in range(0, n, side))


def fitted_windows(rows: int, cols: int, budget: int, margin: int) -> list[tuple[Box, Box]]:
    """(kept box, window box) pairs over a rows x cols grid, each window (kept box and margin) at most
    `budget` elements, computing as few elements in all as any grid of equal kept boxes can: one
    window when the whole grid fits, full-width strips when those cost least, else a grid of cells."""
    if rows * cols <= budget:
        return [((0, 0, rows, cols), (0, 0, rows, cols))]
    best, widths = None, sorted({-(-cols // across) for across in range(1, cols + 1)}, reverse=True)
    for width in widths:  # kept columns a window
        height = budget // min(width + 2 * margin, cols) - 2 * margin  # kept rows a window may have
        if height < 1:
            continue
        height = -(-rows // -(-rows // height))  # the same number of strips, evened out
        cost = _spans(rows, height, margin) * _spans(cols, width, margin)  # a grid: rows times columns
        if best is None or cost < best[0]:
            best = cost, height, width
    if best is None:
        raise ValueError(f"a window of {budget} elements cannot hold a margin of {margin}")
    return [(box, grow(box, margin, rows, cols)) for box in boxes(rows, cols, best[1], best[2])]


def scaled(box: Box, factor: int) -> Box:
    """The same box on a grid `factor` times finer (z elements -> y elements -> pixels)."""
    return tuple(v * factor for v in box)  # type: ignore[return-value]


def slices(box: Box, within: Box | None = None, scale: int = 1) -> tuple:
    """The index of `box` (relative to `within`'s corner, times `scale`) in the last two axes of an array."""
    top, left = (within[0], within[1]) if within else (0, 0)
    return (..., slice((box[0] - top) * scale, (box[2] - top) * scale),
            slice((box[1] - left) * scale, (box[3] - left) * scale))
