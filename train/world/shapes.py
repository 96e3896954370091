"""A deterministic synthetic world of 64x64 pictures: one shape on a plain background, with a caption and questions.

Captions follow one grammar, ``a {size} {colour} {shape} on a {background} background``; every picture also answers
four questions with one word. Some colour x shape combinations never appear in training: generating and answering
about them measures composition, not recall.
"""

import itertools

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
SIZES = {"small": 20, "large": 40}  # side of the shape's bounding box, pixels
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 205, 40)}
SHAPES = ("circle", "square", "triangle")
BACKGROUNDS = {"white": (255, 255, 255), "black": (0, 0, 0)}
# Held out of training: each colour and each shape still appears, in other pairs.
HELD_OUT = (("red", "triangle"), ("green", "square"), ("blue", "circle"))
POSITION_STEP = 4  # shape corners on a 4-pixel lattice: varied, but not sub-token jitter

# What a picture of the world is described by, with every value each can take.
ATTRIBUTE_VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "size": tuple(SIZES), "background": tuple(BACKGROUNDS)}
ATTRIBUTES = tuple(ATTRIBUTE_VALUES)

QUESTIONS = {
    "colour": "What colour is the shape?",
    "shape": "What shape is it?",
    "size": "Is the shape small or large?",
    "background": "What colour is the background?",
}


def caption(size, colour, shape, background):
    return f"a {size} {colour} {shape} on a {background} background"


def parse_caption(text):
    """The attributes {"size", "colour", "shape", "background"} of a caption of the grammar, else None."""
    words = text.split()
    if len(words) != 8:
        return None
    fields = {"size": words[1], "colour": words[2], "shape": words[3], "background": words[6]}
    if fields["size"] not in SIZES or fields["colour"] not in COLOURS or fields["shape"] not in SHAPES or \
            fields["background"] not in BACKGROUNDS or caption(**fields) != text:
        return None
    return fields


def attributes():
    """Every (size, colour, shape, background) of the world."""
    return list(itertools.product(SIZES, COLOURS, SHAPES, BACKGROUNDS))


def is_held_out(colour, shape):
    return (colour, shape) in HELD_OUT


def render(size, colour, shape, background, x, y):
    """The picture with the shape's bounding box at top-left (x, y)."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[background])
    draw = ImageDraw.Draw(image)
    side = SIZES[size]
    box = (x, y, x + side - 1, y + side - 1)
    fill = COLOURS[colour]
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:  # upward isosceles triangle filling its box
        draw.polygon([(x + (side - 1) / 2, y), (x, y + side - 1), (x + side - 1, y + side - 1)], fill=fill)
    return image


def render_record(record):
    """The picture of a record of ``sample``."""
    return render(record["size"], record["colour"], record["shape"], record["background"], record["x"], record["y"])


def sample(rng, size, colour, shape, background):
    """A record with a random position: {"size", "colour", "shape", "background", "x", "y", "caption"}."""
    side = SIZES[size]
    slots = (IMAGE_SIZE - side) // POSITION_STEP + 1
    x, y = (int(v) * POSITION_STEP for v in rng.integers(0, slots, 2))
    return {"size": size, "colour": colour, "shape": shape, "background": background, "x": x, "y": y,
            "caption": caption(size, colour, shape, background)}


def build_split(seed, per_combination, held_out):
    """Records of every combination that is (``held_out=True``) or is not held out, ``per_combination`` each."""
    rng = np.random.default_rng(seed)
    return [sample(rng, *attrs) for attrs in attributes() if is_held_out(attrs[1], attrs[2]) == held_out
            for _ in range(per_combination)]


def answers(record):
    """question key -> the one-word answer for ``record``."""
    return {"colour": record["colour"], "shape": record["shape"], "size": record["size"],
            "background": record["background"]}

