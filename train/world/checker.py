"""Scoring a picture of the tiny world against its caption, without a learned model.

- background: the median colour of the picture's border, nearest of the world's backgrounds;
- the shape's pixels: those far (RGB distance > 100) from that background colour;
- colour: a vote of their pixels, each for the world's colour nearest in hue, among the pixels saturated and
  bright enough to have a hue (HSV saturation >= 0.3, value >= 0.25); the median pixel's nearest world colour
  (RGB) when fewer than 4 pixels vote. A generated shape's edge mixes its colour with the background and with
  stray neighbours: the median of a small red square inside a yellowish ring read yellow, of a dark yellow blob on
  black green; the eye, and the vote, read red and yellow;
- shape: a triangle is narrow at the top and wide at the bottom (in the mask's bounding box, mean width of the top
  third < 0.6 x the bottom third's); otherwise square or circle, whichever of the box itself and the ellipse
  inscribed in it overlaps the shape's core (intersection over union) better. The core is the pixels nearer the
  found colour than the background: a blurred edge's halo (far from the background, so in the mask) would round
  every corner of the mask's box, and an earlier corner-patch test read sharp-looking large squares of the
  tokenizer's reconstructions as circles for that reason;
- size: the bounding box's mean side, small below 30 pixels (the world draws 20 and 40).

Rows and columns holding fewer than two shape pixels are ignored for the boxes, so stray pixels of a generated
picture do not stretch them. ``tests/train/test_world.py`` checks the scorer on the world's own pictures (100 %)
and on them blurred (a Gaussian of radius up to 2 pixels changes no reading).
"""

import numpy as np
from matplotlib.colors import rgb_to_hsv

from .shapes import ATTRIBUTES, BACKGROUNDS, COLOURS

FOREGROUND_DISTANCE = 100.0
MIN_SHAPE_PIXELS = 12
MIN_SATURATION, MIN_VALUE, MIN_VOTES = 0.3, 0.25, 4


def nearest_colour(colour, palette):
    """The name of the palette colour nearest to ``colour`` (RGB)."""
    names = list(palette)
    distances = [np.linalg.norm(np.asarray(palette[n], np.float64) - colour) for n in names]
    return names[int(np.argmin(distances))]


def background_of(pixels):
    """The world background nearest to the median colour of the picture's border ((H, W, 3) RGB array)."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return nearest_colour(np.median(border, axis=0), BACKGROUNDS)


def describe(image):
    """{"background", "colour", "shape", "size"} seen in a 64x64 RGB picture (PIL image or HxWx3 uint8 array);
    the shape's entries are None when no shape is found."""
    pixels = np.asarray(image, dtype=np.float64)[..., :3]
    found = {"background": background_of(pixels), "colour": None, "shape": None, "size": None}
    background = np.asarray(BACKGROUNDS[found["background"]], np.float64)
    mask = np.linalg.norm(pixels - background, axis=-1) > FOREGROUND_DISTANCE
    box = _boxed(mask)
    if mask.sum() < MIN_SHAPE_PIXELS or box is None:
        return found
    found["colour"] = _dominant_colour(pixels[mask])
    height, width = box.shape
    found["size"] = "small" if (height + width) / 2 < 30 else "large"
    third = max(1, height // 3)
    top, bottom = box[:third].sum(axis=1).mean(), box[-third:].sum(axis=1).mean()
    if top < 0.6 * bottom:
        found["shape"] = "triangle"
    else:
        colour = np.asarray(COLOURS[found["colour"]], np.float64)
        core = mask & (np.linalg.norm(pixels - colour, axis=-1) < np.linalg.norm(pixels - background, axis=-1))
        core_box = _boxed(core)
        found["shape"] = _square_or_circle(box if core_box is None else core_box)
    return found


def _hue_saturation_value(rgb):
    """HSV of (N, 3) RGB values in [0, 255]: hue in degrees [0, 360), saturation and value in [0, 1]."""
    hsv = rgb_to_hsv(np.asarray(rgb, np.float64) / 255.0)
    return hsv[..., 0] * 360.0, hsv[..., 1], hsv[..., 2]


_COLOUR_HUES = {name: _hue_saturation_value(np.asarray([rgb]))[0][0] for name, rgb in COLOURS.items()}


def _dominant_colour(shape_pixels):
    """The world colour most of the shape's hued pixels are nearest to (see the module's docstring)."""
    hue, saturation, value = _hue_saturation_value(shape_pixels)
    voters = hue[(saturation >= MIN_SATURATION) & (value >= MIN_VALUE)]
    if len(voters) < MIN_VOTES:
        return nearest_colour(np.median(shape_pixels, axis=0), COLOURS)
    names = list(_COLOUR_HUES)
    gaps = np.abs(voters[None, :] - np.asarray([_COLOUR_HUES[n] for n in names])[:, None])
    votes = np.bincount(np.minimum(gaps, 360.0 - gaps).argmin(axis=0), minlength=len(names))
    return names[int(votes.argmax())]


def _boxed(mask):
    """The mask cut to the bounding box of its rows and columns holding two or more pixels (None when none do)."""
    rows = np.flatnonzero(mask.sum(axis=1) >= 2)
    cols = np.flatnonzero(mask.sum(axis=0) >= 2)
    if not len(rows) or not len(cols):
        return None
    return mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _square_or_circle(box):
    """"square" if the box's mask overlaps the full box better than the ellipse inscribed in it, else "circle"."""
    height, width = box.shape
    y, x = np.mgrid[0:height, 0:width] + 0.5
    ellipse = ((2 * y / height - 1) ** 2 + (2 * x / width - 1) ** 2) <= 1
    square_iou = box.mean()  # the box is the square: intersection = the mask, union = the box
    ellipse_iou = (box & ellipse).sum() / (box | ellipse).sum()
    return "square" if square_iou > ellipse_iou else "circle"


def score(image, record):
    """{attribute: bool} for colour, shape, size and background of ``image`` against ``record``'s."""
    seen = describe(image)
    return {key: seen[key] == record[key] for key in ATTRIBUTES}
