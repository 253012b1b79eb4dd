"""Boxes on the latent grids: the coding tiles and transform windows that cut an image, with the
context around each. Pure index arithmetic, shared by the codec and the encoder effort."""

from __future__ import annotations

Box = tuple[int, int, int, int]  # top, left, bottom, right, in elements of the latent y (or of z)


def boxes(rows: int, cols: int, side: int) -> list[Box]:
    """A grid of boxes `side` elements a side over a rows x cols grid, row-major."""
    return [(top, left, min(top + side, rows), min(left + side, cols))
            for top in range(0, rows, side) for left in range(0, cols, side)]


def grow(box: Box, margin: int, rows: int, cols: int) -> Box:
    """`box` with `margin` elements around it, within a rows x cols grid."""
    return max(box[0] - margin, 0), max(box[1] - margin, 0), min(box[2] + margin, rows), min(box[3] + margin, cols)


def windows(rows: int, cols: int, side: int, margin: int) -> list[tuple[Box, Box]]:
    """(kept box, window box) pairs: each kept box with `margin` elements around it, within the grid."""
    return [(box, grow(box, margin, rows, cols)) for box in boxes(rows, cols, side)]


def scaled(box: Box, factor: int) -> Box:
    """The same box on a grid `factor` times finer (z elements -> y elements -> pixels)."""
    return tuple(v * factor for v in box)  # type: ignore[return-value]


def slices(box: Box, within: Box | None = None, scale: int = 1) -> tuple:
    """The index of `box` (relative to `within`'s corner, times `scale`) in the last two axes of an array."""
    top, left = (within[0], within[1]) if within else (0, 0)
    return (..., slice((box[0] - top) * scale, (box[2] - top) * scale),
            slice((box[1] - left) * scale, (box[3] - left) * scale))
