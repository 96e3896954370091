"""Writes the tiny world to disk in the formats users bring: PNG pictures, a T2I JSON list ({"name", "text",
"image"}) and a LLaVA-style VQA list ({"id", "image", "conversations"}), for training and for evaluation.

Training pictures come from the combinations that are not held out; evaluation pictures from every combination
(the held-out ones measure composition, the others recall), with their own seed so no picture is shared.
"""

import json
import os

from emu3.atomic import atomic_path, atomic_write_json

from . import shapes

TRAIN_SEED, EVAL_SEED = 0, 1


def _write_pictures(records, image_dir, prefix):
    os.makedirs(image_dir, exist_ok=True)
    for i, record in enumerate(records):
        record["name"] = f"{prefix}_{i:05d}"
        record["image"] = os.path.join(os.path.basename(image_dir), record["name"] + ".png")
        path = os.path.join(image_dir, record["name"] + ".png")
        if not os.path.isfile(path):
            with atomic_path(path) as tmp:
                shapes.render_record(record).save(tmp, format="PNG")
    return records


def t2i_items(records):
    return [{"name": r["name"], "text": r["caption"], "image": r["image"]} for r in records]


def vqa_items(records):
    """One question per picture, the four in turn: as many VQA samples as T2I ones (drawing is the harder task and
    needs its share of the steps; each question is still asked about a quarter of the pictures)."""
    keys = list(shapes.QUESTIONS)
    items = []
    for i, r in enumerate(records):
        key = keys[i % len(keys)]
        items.append({"id": f"{r['name']}_{key}", "image": r["image"], "question_key": key,
                      "conversations": [{"from": "human", "value": "<image>\n" + shapes.QUESTIONS[key]},
                                        {"from": "gpt", "value": shapes.answers(r)[key]}]})
    return items


def write_world(out_dir, train_per_combination, eval_per_combination):
    """Pictures and lists under ``out_dir``; returns {name: path} of the JSON files written."""
    train = _write_pictures(shapes.build_split(TRAIN_SEED, train_per_combination, held_out=False),
                            os.path.join(out_dir, "images"), "train")
    rng_records = shapes.build_split(EVAL_SEED, eval_per_combination, held_out=False) + \
        shapes.build_split(EVAL_SEED + 1, eval_per_combination, held_out=True)
    evaluation = _write_pictures(rng_records, os.path.join(out_dir, "eval_images"), "eval")
    for r in evaluation:
        r["held_out"] = shapes.is_held_out(r["colour"], r["shape"])
    files = {"t2i_train": t2i_items(train), "vqa_train": vqa_items(train), "eval": evaluation}
    paths = {}
    for name, items in files.items():
        paths[name] = os.path.join(out_dir, f"{name}.json")
        atomic_write_json(paths[name], items, indent=1)
    return paths


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
