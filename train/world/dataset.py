"""Writes the tiny world to disk in the formats users bring: PNG pictures, a T2I JSON list ({"name", "text",
"image"}) and a LLaVA-style VQA list ({"id", "image", "conversations"}), for training and for evaluation.

Training pictures come from the combinations that are not held out; evaluation pictures from every combination
(the held-out ones measure composition, the others recall), with their own seed so no picture is shared; they are
also written as the LLM's evaluation sets (``eval_{set}.json``: captions and questions, seen and held-out apart).
"""

import json
import os

from emu3.atomic import atomic_path, atomic_write_json

from . import shapes

TRAIN_SEED, EVAL_SEED = 0, 1
EVALUATION_SETS = ("t2i_seen", "t2i_held_out", "vqa_seen", "vqa_held_out", "vqa_shape_seen", "vqa_shape_held_out")


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


def vqa_items(records, offset=0):
    """One question per picture, the four in turn (starting with question ``offset``): as many VQA samples as T2I
    ones (drawing is the harder task and needs its share of the steps; each question is still asked about a quarter
    of the pictures)."""
    keys = list(shapes.QUESTIONS)
    items = []
    for i, r in enumerate(records):
        key = keys[(i + offset) % len(keys)]
        items.append({"id": f"{r['name']}_{key}", "image": r["image"], "question_key": key,
                      "conversations": [{"from": "human", "value": "<image>\n" + shapes.QUESTIONS[key]},
                                        {"from": "gpt", "value": shapes.answers(r)[key]}]})
    return items


def evaluation_lists(evaluation):
    """The evaluation pictures as the LLM's evaluation sets, {set name: T2I or VQA items}: ``t2i_seen`` and
    ``t2i_held_out`` (their captions), ``vqa_seen`` and ``vqa_held_out`` (every question of each picture), and the
    shape question alone, ``vqa_shape_seen`` and ``vqa_shape_held_out``. The LLM's loss on each, logged while it
    trains, tells the recall of seen pairs from the composition of held-out ones."""
    lists = {}
    for split, held_out in (("seen", False), ("held_out", True)):
        records = [r for r in evaluation if r["held_out"] == held_out]
        questions = [item for offset in range(len(shapes.QUESTIONS)) for item in vqa_items(records, offset)]
        lists[f"t2i_{split}"] = t2i_items(records)
        lists[f"vqa_{split}"] = questions
        lists[f"vqa_shape_{split}"] = [item for item in questions if item["question_key"] == "shape"]
    return {name: lists[name] for name in EVALUATION_SETS}


def task_of(set_name):
    """"t2i" or "vqa": the task of an evaluation set of ``evaluation_lists``."""
    return set_name.split("_")[0]


def write_evaluation_lists(data_dir):
    """``data_dir/eval_{set}.json`` for every set of ``evaluation_lists`` (from ``data_dir/eval.json``);
    returns {set name: path}."""
    paths = {}
    for name, items in evaluation_lists(load(os.path.join(data_dir, "eval.json"))).items():
        paths[name] = os.path.join(data_dir, f"eval_{name}.json")
        atomic_write_json(paths[name], items, indent=1)
    return paths


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
    write_evaluation_lists(out_dir)
    return paths


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)
