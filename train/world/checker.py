"""Scoring a picture of the tiny world against its caption, without a learned model.

- background: the median colour of the picture's border, nearest of the world's backgrounds;
- the shape's pixels: those far (RGB distance > 100) from that background colour;
- colour: their median colour, nearest of the world's colours;
- shape: from the mask inside its bounding box: a triangle is narrow at the top and wide at the bottom (mean width
  of the top third < 0.6 x the bottom third's); a square fills its box's corners (> 0.8 of four corner patches of
  a fifth of the box's side), a circle does not;
- size: the bounding box's mean side, small below 30 pixels (the world draws 20 and 40).

Rows and columns holding fewer than two shape pixels are ignored for the box, so stray pixels of a generated
picture do not stretch it. ``tests/train/test_world.py`` checks the scorer on the world's own pictures (100 %).
"""

import numpy as np

from .shapes import BACKGROUNDS, COLOURS

FOREGROUND_DISTANCE = 100.0
MIN_SHAPE_PIXELS = 12


def _nearest(colour, palette):
    names = list(palette)
    distances = [np.linalg.norm(np.asarray(palette[n], np.float64) - colour) for n in names]
    return names[int(np.argmin(distances))]


def describe(image):
    """{"background", "colour", "shape", "size"} seen in a 64x64 RGB picture (PIL image or HxWx3 uint8 array);
    the shape's entries are None when no shape is found."""
    pixels = np.asarray(image, dtype=np.float64)[..., :3]
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background_colour = np.median(border, axis=0)
    found = {"background": _nearest(background_colour, BACKGROUNDS), "colour": None, "shape": None, "size": None}
    mask = np.linalg.norm(pixels - np.asarray(BACKGROUNDS[found["background"]], np.float64), axis=-1) \
        > FOREGROUND_DISTANCE
    rows = np.flatnonzero(mask.sum(axis=1) >= 2)
    cols = np.flatnonzero(mask.sum(axis=0) >= 2)
    if mask.sum() < MIN_SHAPE_PIXELS or not len(rows) or not len(cols):
        return found
    found["colour"] = _nearest(np.median(pixels[mask], axis=0), COLOURS)
    box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    height, width = box.shape
    found["size"] = "small" if (height + width) / 2 < 30 else "large"
    third = max(1, height // 3)
    top, bottom = box[:third].sum(axis=1).mean(), box[-third:].sum(axis=1).mean()
    if top < 0.6 * bottom:
        found["shape"] = "triangle"
    else:
        ch, cw = max(1, height // 5), max(1, width // 5)
        corners = [box[:ch, :cw], box[:ch, -cw:], box[-ch:, :cw], box[-ch:, -cw:]]
        found["shape"] = "square" if np.mean([c.mean() for c in corners]) > 0.8 else "circle"
    return found


def score(image, record):
    """{attribute: bool} for colour, shape, size and background of ``image`` against ``record``'s."""
    seen = describe(image)
    return {key: seen[key] == record[key] for key in ("colour", "shape", "size", "background")}
