"""The tiny world with hand-made codes that keep shape apart from colour: what the LLM makes of composition when
its tokens allow it.

The trained vision tokenizer writes a red triangle with codes of red things (``probe.py``), so nothing learned from
the triangles of other colours can carry over to it. These codes are built by hand instead, one per 8x8 cell as
the tokenizer's: an empty cell is its background's code, a fully covered cell its colour's code, and a partly
covered cell the code of its coverage pattern, whatever the colour (the patterns of the training pictures, the
rest mapped to the nearest by Hamming distance). The same LLM recipe trained on them and scored the same way
(drawn pictures are rebuilt from the codes exactly, with the colour of the fully covered cells) separates what the
tokens limit from what the LLM does with tokens that share shape across colours. Two controls: with
``--outline-colour`` a partly covered cell's code carries its colour too, as the tokenizer's codes do; with
``--background-colour`` an empty cell's code carries the shape's colour (outlines still shared, colour in every
cell: whether sharing the shape is enough when the colour is everywhere).

    python -m train.world.oracle --world outputs/tiny-world     # after bash scripts/tiny_world.sh

writes ``WORLD/oracle/`` (``prepared/`` shards, ``runs/llm``, ``metrics.json``) and prints both worlds' scores.
"""

import argparse
import collections
import itertools
import os
import subprocess
import sys

import numpy as np
from PIL import Image

from . import dataset, shapes
from .checker import background_of, nearest_colour

CELL = 8  # pixels per code, as the tokenizer's spatial factor
COLOUR_NAMES = tuple(shapes.COLOURS)
BACKGROUND_NAMES = tuple(shapes.BACKGROUNDS)


def _cells(picture):
    """(background name, per-cell shape masks (h, w, CELL * CELL) bool, pixels as (h, w, CELL * CELL, 3))."""
    pixels = np.asarray(picture, dtype=np.int64)[..., :3]
    background = background_of(pixels)
    mask = (pixels != np.asarray(shapes.BACKGROUNDS[background])).any(-1)
    h, w = mask.shape[0] // CELL, mask.shape[1] // CELL

    def split(a):
        return a.reshape(h, CELL, w, CELL, *a.shape[2:]).swapaxes(1, 2).reshape(h, w, CELL * CELL, *a.shape[2:])

    return background, split(mask), split(pixels)


class HandMadeCodes:
    """Codes of the world's pictures, one per cell: ``fit`` learns the coverage patterns of partly covered cells,
    ``encode`` maps a picture to its (h, w) grid, ``decode`` a grid back to a picture.

    Codes, in order: the backgrounds', the colours' (fully covered cells), then the coverage patterns'. Two controls
    put the colour where the vision tokenizer's codes (or a tokenizer that spread it) would: ``outline_colour``, a
    partly covered cell's code is its pattern *and* its colour, as the vision tokenizer's codes are, while
    backgrounds and fully covered cells keep one code each (shape tied to colour, codes as clean); and
    ``background_colour``, an empty cell's code is its background *and* the shape's colour (shape still shared
    across colours, colour in every cell of the picture)."""

    def __init__(self, patterns, outline_colour=False, background_colour=False):
        self.patterns = np.asarray(patterns, dtype=bool)  # (n, CELL * CELL)
        self.outline_colour = bool(outline_colour)
        self.background_colour = bool(background_colour)
        self.per_pattern = len(COLOUR_NAMES) if self.outline_colour else 1
        self.per_background = len(COLOUR_NAMES) if self.background_colour else 1
        self.first_colour = len(BACKGROUND_NAMES) * self.per_background
        self.first_pattern = self.first_colour + len(COLOUR_NAMES)

    @property
    def size(self):
        return self.first_pattern + len(self.patterns) * self.per_pattern

    def background_code(self, background, colour):
        """The code of an empty cell on ``background`` in a picture whose shape is ``colour``."""
        own = COLOUR_NAMES.index(colour) if self.background_colour else 0
        return BACKGROUND_NAMES.index(background) * self.per_background + own

    def colour_code(self, colour):
        """The code of a cell the shape covers fully."""
        return self.first_colour + COLOUR_NAMES.index(colour)

    @classmethod
    def fit(cls, pictures, codebook_size, outline_colour=False, patterns=None, background_colour=False):
        """The most frequent coverage patterns of partly covered cells: ``patterns`` of them, or as many as
        ``codebook_size`` codes hold."""
        layout = cls([], outline_colour, background_colour)
        room = (codebook_size - layout.first_pattern) // layout.per_pattern
        if patterns is not None and not 1 <= patterns <= room:
            raise ValueError(f"{codebook_size} codes hold 1 to {room} patterns here, not {patterns}")
        counts = collections.Counter()
        for picture in pictures:
            _, masks, _ = _cells(picture)
            coverage = masks.mean(-1)
            counts.update(np.packbits(masks[i, j]).tobytes() for i, j in zip(*np.nonzero((coverage > 0)
                                                                                          & (coverage < 1))))
        kept = [key for key, _ in counts.most_common(patterns or room)]
        return cls([np.unpackbits(np.frombuffer(key, np.uint8)).astype(bool) for key in kept], outline_colour,
                   background_colour)

    def encode(self, picture):
        background, masks, pixels = _cells(picture)
        coverage = masks.mean(-1)
        shape_colour = nearest_colour(pixels[masks].mean(0), shapes.COLOURS) if masks.any() else COLOUR_NAMES[0]
        grid = np.full(coverage.shape, self.background_code(background, shape_colour), np.int32)
        for i, j in zip(*np.nonzero(coverage > 0)):
            name = nearest_colour(pixels[i, j][masks[i, j]].mean(0), shapes.COLOURS)
            if coverage[i, j] == 1:
                grid[i, j] = self.colour_code(name)
            else:
                pattern = int((self.patterns != masks[i, j]).sum(-1).argmin())
                own = COLOUR_NAMES.index(name) if self.outline_colour else 0
                grid[i, j] = self.first_pattern + pattern * self.per_pattern + own
        return grid

    def decode(self, grid):
        """The picture of a grid: pattern cells take their own colour (``outline_colour``) or the colour most of
        the grid's cells say, and the grid's most frequent background (grey when the grid has none); codes outside
        the fitted ones count as background."""
        grid = np.asarray(grid)
        colour_of = {self.colour_code(c): np.asarray(shapes.COLOURS[c]) for c in COLOUR_NAMES}
        background_of_code, says_colour = {}, dict(colour_of)
        for b, c in itertools.product(BACKGROUND_NAMES, COLOUR_NAMES):
            background_of_code[self.background_code(b, c)] = np.asarray(shapes.BACKGROUNDS[b])
            if self.background_colour:
                says_colour[self.background_code(b, c)] = np.asarray(shapes.COLOURS[c])
        grey = np.full(3, 128)

        def majority(table):
            found = collections.Counter(int(c) for c in grid.reshape(-1) if int(c) in table)
            return table[found.most_common(1)[0][0]] if found else grey

        colour, background = majority(says_colour), majority(background_of_code)
        h, w = grid.shape
        out = np.empty((h, w, CELL * CELL, 3), np.uint8)
        for (i, j), code in np.ndenumerate(grid):
            code = int(code)
            if code in colour_of:
                out[i, j] = colour_of[code]
            elif self.first_pattern <= code < self.size:
                pattern, own = divmod(code - self.first_pattern, self.per_pattern)
                fill = np.asarray(shapes.COLOURS[COLOUR_NAMES[own]]) if self.outline_colour else colour
                out[i, j] = np.where(self.patterns[pattern][:, None], fill, background)
            else:
                out[i, j] = background_of_code.get(code, background)
        out = out.reshape(h, w, CELL, CELL, 3).swapaxes(1, 2).reshape(h * CELL, w * CELL, 3)
        return Image.fromarray(out)


def hand_made_processor(codes, tokenizer, model_config=None):
    """An ``Emu3Processor`` that tokenises and draws pictures with ``codes`` instead of a vision tokenizer, so the
    world's evaluation (``evaluate.py``) runs on it unchanged."""
    from emu3.mllm import Emu3Processor

    class HandMadeProcessor(Emu3Processor):
        def tokenize_image(self, images, padding_image=False):
            return [codes.encode(image.convert("RGB")) for image in self._as_image_list(images)]

        def decode_grids(self, grids, batch_size=16):
            return [codes.decode(grid) for grid in grids]

    return HandMadeProcessor(tokenizer=tokenizer, model_config=model_config)


# ---- the experiment ------------------------------------------------------------------------------------------------
TRAINING_LISTS = {"t2i": ("t2i", "t2i_train.json"), "vqa": ("vqa", "vqa_train.json")}  # folder: (task, list)


def pictures_of(data_dir, lists):
    """{picture path as the lists name it: the RGB picture} of every picture in ``lists`` ({folder: (task, list
    file in data_dir)})."""
    paths = {item["image"] for _, name in lists.values() for item in dataset.load(os.path.join(data_dir, name))}
    return {path: Image.open(os.path.join(data_dir, path)).convert("RGB") for path in sorted(paths)}


def evaluation_lists(data_dir):
    """The world's evaluation sets as ``prepare`` lists: {"eval/NAME": (task, list file)}."""
    return {f"eval/{name}": (dataset.task_of(name), os.path.basename(path))
            for name, path in dataset.write_evaluation_lists(data_dir).items()}


def prepare(codes, data_dir, lists, pictures, out_dir):
    """The world's lists ({folder: (task, list file in data_dir)}: ``TRAINING_LISTS``, ``evaluation_lists``) as
    token shards of these codes in ``out_dir/folder`` (``pictures``: {path: picture} of every picture they name);
    returns {folder: path}."""
    from train.shards import ShardWriter, make_record, part_name

    grids = {path: codes.encode(picture) for path, picture in pictures.items()}
    paths = {}
    for folder, (task, name) in lists.items():
        items = dataset.load(os.path.join(data_dir, name))
        if task == "t2i":
            records = [make_record(i["name"], "t2i", i["text"], "", grids[i["image"]]) for i in items]
        else:
            records = [make_record(i["id"], "vqa", i["conversations"][0]["value"].replace("<image>\n", ""),
                                   i["conversations"][1]["value"], grids[i["image"]]) for i in items]
        paths[folder] = os.path.join(out_dir, folder)
        writer = ShardWriter(paths[folder])
        writer.write(0, records)
        writer.finish({"task": task, "num_samples": len(records), "parts": [part_name(0)],
                       "source": os.path.abspath(os.path.join(data_dir, name)),
                       "image_area": shapes.IMAGE_SIZE ** 2})
    return paths


def score(run_dir, codes, records, seed):
    """The world's evaluation (drawn pictures and answers) of the LLM in ``run_dir``, through ``codes``."""
    from emu3.mllm import Emu3ForCausalLM, Emu3Tokenizer

    from . import evaluate as world_evaluation

    model = Emu3ForCausalLM.from_pretrained(run_dir)
    processor = hand_made_processor(codes, Emu3Tokenizer.from_pretrained(run_dir, padding_side="left"),
                                     model.config)
    generation, _ = world_evaluation.evaluate_generation(model, processor, records, seed=seed)
    vqa, _ = world_evaluation.evaluate_answers(model, processor, records)
    return {"text_to_image": generation, "vqa": vqa}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Train and score the tiny world's LLM on codes that keep shape apart "
                                            "from colour (the world's data, tokenizer, initial LLM and recipe).")
    p.add_argument("--world", required=True, help="a finished tiny world (the --output-dir of scripts/tiny_world.sh)")
    p.add_argument("--output-dir", help="default: WORLD/oracle (WORLD/oracle-outline-colour)")
    p.add_argument("--llm-steps", type=int, help="default: the world's")
    p.add_argument("--seed", type=int, help="default: the world's")
    p.add_argument("--outline-colour", action="store_true",
                   help="the control: a partly covered cell's code is its pattern and its colour, as the vision "
                        "tokenizer's codes are (backgrounds and fully covered cells keep one code each)")
    p.add_argument("--background-colour", action="store_true",
                   help="the other control: an empty cell's code is its background and the shape's colour (shape "
                        "still shared across colours, colour in every cell)")
    p.add_argument("--patterns", type=int, help="coverage patterns kept (default: as many as the world's codebook "
                                                "holds: 250, 244 with --background-colour, 62 with --outline-colour)")
    return p.parse_args(argv)


def main(argv=None):
    from emu3.atomic import atomic_write_json
    from emu3.tokenizer import Emu3VisionVQConfig
    from train import tiny_world
    from train.trainer import final_evaluation_losses, read_log

    args = parse_args(argv)
    if args.llm_steps is not None and args.llm_steps < 1:
        raise SystemExit(f"error: --llm-steps must be at least 1, got {args.llm_steps}")
    world = os.path.abspath(args.world)
    settings_path = os.path.join(world, ".stages", "settings.json")
    init_dir = os.path.join(world, "runs", "llm-init")
    if not os.path.isfile(settings_path) or not os.path.isfile(os.path.join(init_dir, "model.safetensors")):
        raise SystemExit(f"error: {world} is not a tiny world that reached its LLM stage; run "
                         "bash scripts/tiny_world.sh (OUTPUT_DIR=...) first")
    settings = dataset.load(settings_path)
    steps = args.llm_steps or settings["llm_steps"]
    seed = settings["seed"] if args.seed is None else args.seed
    variant = "".join(f"-{name}" for name, on in (("outline-colour", args.outline_colour),
                                                   ("background-colour", args.background_colour)) if on)
    out = os.path.abspath(args.output_dir or os.path.join(world, "oracle" + variant))
    data_dir = os.path.join(world, "data")
    codebook = Emu3VisionVQConfig.from_pretrained(os.path.join(world, "Emu3-VisionTokenizer")).codebook_size
    pictures = pictures_of(data_dir, TRAINING_LISTS)  # the codes are fitted to the training pictures only
    try:
        codes = HandMadeCodes.fit(pictures.values(), codebook, args.outline_colour, args.patterns,
                                  args.background_colour)
    except ValueError as e:
        raise SystemExit(f"error: --patterns: {e}") from None

    # A training of other steps or seed must not resume this one's checkpoints.
    differ = tiny_world.differing_settings(os.path.join(out, "settings.json"), {
        "world": world, "llm_steps": steps, "seed": seed, "outline_colour": args.outline_colour,
        "background_colour": args.background_colour, "patterns": args.patterns}, {"background_colour": False})
    if differ:
        raise SystemExit(f"error: {out} holds a run with other settings ({tiny_world.describe_differences(differ)}); "
                         "pass another --output-dir")

    evaluation = evaluation_lists(data_dir)
    # The evaluation pictures are others than the training ones: each picture is read once.
    paths = prepare(codes, data_dir, {**TRAINING_LISTS, **evaluation},
                    dict(pictures, **pictures_of(data_dir, evaluation)), os.path.join(out, "prepared"))
    per_pattern = f" x {len(COLOUR_NAMES)} colours" if codes.outline_colour else ""
    print(f"{len(codes.patterns)} coverage patterns{per_pattern} + {codes.first_pattern} background/colour codes for "
          f"{len(pictures)} training pictures, as token shards in {os.path.join(out, 'prepared')}", flush=True)

    run_dir = os.path.join(out, "runs", "llm")
    log = read_log(run_dir) if os.path.isfile(os.path.join(run_dir, "model.safetensors")) else []
    if log and log[-1]["step"] == steps:
        print(f"the LLM in {run_dir} finished its {steps} steps earlier: not trained again", flush=True)
    else:  # a first run, or an interrupted one: the trainer resumes from its newest checkpoint
        command, env = tiny_world.llm_training(init_dir, [paths["t2i"], paths["vqa"]], run_dir, steps, seed,
                                               evaluation_sets={f[len("eval/"):]: paths[f] for f in evaluation})
        print("  $ " + " ".join(command), flush=True)
        if subprocess.run(command, env=dict(os.environ, **env)).returncode:
            raise SystemExit("error: the LLM's training failed (see above)")

    metrics = score(run_dir, codes, dataset.load(os.path.join(data_dir, "eval.json")), seed)
    metrics["codes"] = {"patterns": len(codes.patterns), "outline_colour": codes.outline_colour,
                        "background_colour": codes.background_colour, "llm_steps": steps, "seed": seed}
    metrics["llm"] = {"eval_loss": final_evaluation_losses(read_log(run_dir))}
    atomic_write_json(os.path.join(out, "metrics.json"), metrics, indent=2)
    print(summary(metrics, _read_metrics(world), codes), flush=True)
    return metrics


def _read_metrics(world):
    path = os.path.join(world, "metrics.json")
    return dataset.load(path) if os.path.isfile(path) else None


def summary(oracle, world=None, codes=None):
    """Both worlds' scores, held-out pairs then seen ones."""
    def cells(m, split):
        drawn, vqa = m["text_to_image"].get(split), m["vqa"].get(split)
        if drawn is None or vqa is None:
            return "-"
        return ("/".join(f"{100 * drawn[k]:.0f}" for k in ("colour", "shape", "size", "all"))
                + f" %, VQA {100 * vqa['all']:.0f} % (shape {100 * vqa['shape']:.0f} %)")

    name = ("hand-made, colour in outlines" if codes is not None and codes.outline_colour else
            "hand-made, colour everywhere" if codes is not None and codes.background_colour else
            "codes shared across colours")
    rows = [(name, oracle)] + ([("the world's vision tokenizer", world)] if world else [])
    lines = ["drawn colour/shape/size/all right, and questions answered right:"]
    for name, m in rows:
        lines.append(f"  {name:29s} held-out {cells(m, 'held_out')}; seen {cells(m, 'seen')}")
    losses = [(name, m.get("llm", {}).get("eval_loss", {})) for name, m in rows]
    losses = [(name, loss) for name, loss in losses if "t2i_seen" in loss and "t2i_held_out" in loss]
    if losses:
        lines.append("the LLM's loss on the evaluation pictures' visual tokens:")
        lines += [f"  {name:29s} held-out {loss['t2i_held_out']:.3f}; seen {loss['t2i_seen']:.3f}"
                  for name, loss in losses]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
