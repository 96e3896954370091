"""Data preparation shared by the three prepare scripts: inputs -> token shards (``train/shards.py``).

Images are handled as the original's ``prepare_data.py``: RGB; resized to about ``--image-area`` pixels
(s = sqrt(area / (h * w)), PIL resize to (round(w * s), round(h * s)) with PIL's default filter); then the image
processor of the vision tokenizer folder (smart_resize to multiples of the spatial factor within its pixel
bounds); then encoded, in batches of equally sized images. Inputs that cannot be used (missing or corrupt image,
empty caption or answer) are skipped, named in the summary and in ``prepare_report.json``, and never stop the run.
Parts already written are skipped on a rerun. ``--data-path`` may also be the ``list/train.json`` of a folder
prepared by the original (``feature/*.pth``) or by mindone (``feature/*.ckpt``): its token grids are converted
as they are, without the vision tokenizer.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from emu3.arrays import batches_by_shape
from emu3.atomic import atomic_write_json

from .shards import ShardWriter, make_record, part_name

REPORT_FILE = "prepare_report.json"


def parse_args(task, argv=None, default_image_area=None):
    p = argparse.ArgumentParser(description=f"Prepare {task} data for Emu3 SFT: inputs -> token shards.")
    if task != "text":
        p.add_argument("--model-path", required=True, help="folder of the vision tokenizer (Emu3-VisionTokenizer: "
                                                           "config.json, weights, preprocessor_config.json)")
        p.add_argument("--image-area", type=int, default=default_image_area,
                       help=f"resize every image to about this many pixels first (default {default_image_area})")
        p.add_argument("--batch-size", type=int, default=8, help="images encoded together (default 8)")
        p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None,
                       help="vision tokenizer dtype (default: bf16 on Ascend, fp32 on CPU)")
        p.add_argument("--mode", choices=("pynative", "graph"), default="pynative",
                       help="pynative: encode op by op (default); graph: as compiled graphs, faster per image after "
                            "one compile per image size (for many images of few sizes)")
    p.add_argument("--data-path", required=True, help="the input JSON list")
    p.add_argument("--output-path", required=True, help="folder of the token shards (created; a rerun resumes)")
    p.add_argument("--samples-per-part", type=int, default=1024, help="samples per MindRecord part (default 1024)")
    args = p.parse_args(argv)
    if args.samples_per_part < 1:
        p.error("--samples-per-part must be >= 1")
    if task != "text" and (args.image_area is None or args.image_area < 1 or args.batch_size < 1):
        p.error("--image-area and --batch-size must be positive")
    return args


# ---- inputs ------------------------------------------------------------------------------------------------------
def load_items(path):
    try:
        with open(path, encoding="utf-8") as f:
            items = json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"error: --data-path {path!r} does not exist") from None
    except ValueError as e:
        raise SystemExit(f"error: --data-path {path!r} is not valid JSON ({e})") from None
    if isinstance(items, dict) and "path_list" in items:
        return legacy_items(items, path)
    if not isinstance(items, list):
        raise SystemExit(f"error: --data-path {path!r} must hold a JSON list of samples (or be the list/train.json "
                         f"of an original/mindone prepared folder), got {type(items).__name__}")
    if not items:
        raise SystemExit(f"error: --data-path {path!r} is an empty list: nothing to prepare")
    return items


def _text(item, key):
    value = item.get(key, "") if isinstance(item, dict) else ""
    return value.strip() if isinstance(value, str) else ""


def t2i_item(item, index):
    """{"name", "text", "image"} -> (name, caption, response, image path) or (name, reason)."""
    name = str(item.get("name", index)) if isinstance(item, dict) else str(index)
    if not isinstance(item, dict) or not isinstance(item.get("image"), str):
        return name, 'not an object with an "image" path'
    if not _text(item, "text"):
        return name, "empty caption"
    return name, item["text"], "", item["image"]


def vqa_item(item, index):
    """LLaVA style {"id", "image", "conversations": [{"from": "human", ...}, {"from": "gpt", ...}]}: the first
    human/gpt pair; "<image>" is removed from the question."""
    name = str(item.get("id", index)) if isinstance(item, dict) else str(index)
    turns = item.get("conversations") if isinstance(item, dict) else None
    if not isinstance(item, dict) or not isinstance(item.get("image"), str):
        return name, 'not an object with an "image" path'
    if not isinstance(turns, list) or len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]) \
            or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
        return name, 'conversations must start with a {"from": "human"} then a {"from": "gpt"} turn'
    question = _text(turns[0], "value").replace("<image>", "").strip()
    answer = _text(turns[1], "value")
    if not question or not answer:
        return name, "empty question or answer"
    return name, question, answer, item["image"]


def text_item(item, index):
    """{"id", "texts", "response"}."""
    name = str(item.get("id", index)) if isinstance(item, dict) else str(index)
    if not _text(item, "texts") or not _text(item, "response"):
        return name, 'needs non-empty "texts" and "response"'
    return name, item["texts"].strip(), item["response"].strip(), None


PARSERS = {"t2i": t2i_item, "vqa": vqa_item, "text": text_item}


# ---- the original's / mindone's prepared layout: list/train.json + feature/{name}.pth|.ckpt ---------------------
def legacy_items(listing, path):
    """{"prefix": FEATURE_DIR, "path_list": [...]} -> items that name one feature file each."""
    prefix = listing.get("prefix", "")
    if not os.path.isdir(prefix):  # moved folder: feature/ beside list/
        prefix = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), "feature")
    files = listing["path_list"]
    if not isinstance(files, list) or not files:
        raise SystemExit(f"error: {path!r} has an empty or invalid path_list: nothing to convert")
    return [{"feature": os.path.join(prefix, str(f))} for f in files]


def read_feature(path):
    """One feature file of the original (.pth: torch.save of {"name", "images", "texts"}) or of mindone (.ckpt:
    save_checkpoint with append_dict, + "response"; images=False for text-only) -> dict of plain values. .pth
    files are read with torch's weights-only unpickler (numpy arrays allowed), never with full pickle."""
    if path.endswith(".ckpt"):
        import mindspore as ms

        data = {k: (v if isinstance(v, (str, bool)) else v.asnumpy()) for k, v in ms.load_checkpoint(path).items()}
    elif path.endswith((".pth", ".pt")):
        try:
            import torch
        except ImportError:
            raise ValueError("reading .pth features needs PyTorch (pip install torch)") from None
        arrays = [np.core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.int64)),
                  type(np.dtype(np.int32))]
        with torch.serialization.safe_globals(arrays):
            data = torch.load(path, map_location="cpu", weights_only=True)
        data = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in data.items()}
    else:
        raise ValueError(f"unknown feature file type (expected .pth or .ckpt): {path}")
    return data


def feature_item(item, index, task):
    path = item["feature"]
    name = os.path.splitext(os.path.basename(path))[0]
    if not os.path.isfile(path):
        return name, f"feature file not found: {path}"
    try:
        data = read_feature(path)
    except Exception as e:  # any unreadable file is reported and skipped, never fatal
        return name, f"unreadable feature file {path}: {e}"
    name = str(data.get("name", name))
    grid = np.asarray(data.get("images", False))
    grid = grid.reshape(grid.shape[-2:]) if grid.dtype.kind in "iu" and grid.ndim >= 2 else None
    text, response = str(data.get("texts", "")).strip(), str(data.get("response", "")).strip()
    if task == "t2i" and (grid is None or not text):
        return name, "a text-to-image feature needs an image grid and a caption"
    if task != "t2i" and (not text or not response):
        return name, "needs non-empty texts and response"
    if task == "vqa" and grid is None:
        return name, "a VQA feature needs an image grid"
    return name, text, response, grid


def resolve_image(path, base):
    """Absolute, or relative to the JSON's folder (also under its images/ folder, mindone's VQA layout)."""
    if os.path.isabs(path):
        return path
    for candidate in (os.path.join(base, path), os.path.join(base, "images", path)):
        if os.path.exists(candidate):
            return candidate
    return os.path.join(base, path)


def load_image(path, image_area):
    """RGB, resized to about ``image_area`` pixels as the original; raises ValueError with a short reason."""
    from PIL import Image

    if not os.path.isfile(path):
        raise ValueError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"unreadable image {path}: {e}") from None
    w, h = im.size
    s = math.sqrt(image_area / (h * w))
    return im.resize((round(w * s), round(h * s)))


# ---- encoding ----------------------------------------------------------------------------------------------------
class ImageEncoder:
    """Pixels -> token grids with a vision tokenizer folder, batching equally sized images."""

    def __init__(self, model_path, dtype=None, graph=False):
        from emu3.tokenizer import Emu3VisionVQImageProcessor, Emu3VisionVQModel

        if not os.path.isdir(model_path):
            raise SystemExit(f"error: --model-path {model_path!r} is not a folder")
        if not os.path.isfile(os.path.join(model_path, "preprocessor_config.json")):
            raise SystemExit(f"error: no preprocessor_config.json in --model-path {model_path!r}; pass the folder of "
                             "Emu3-VisionTokenizer (config.json, weights, preprocessor_config.json)")
        self.model = Emu3VisionVQModel.from_pretrained(model_path, dtype=dtype)
        self.processor = Emu3VisionVQImageProcessor.from_pretrained(model_path)
        self.graph = graph
        self.model.set_graph_mode(graph)

    def encode(self, images, batch_size):
        """A list of PIL images -> a list of (h, w) int32 grids, in order."""
        import mindspore as ms

        pixels = [self.processor(im, return_tensors="np")["pixel_values"][0] for im in images]
        grids = [None] * len(pixels)
        for chunk in batches_by_shape(pixels, batch_size):
            batch = np.stack([pixels[i] for i in chunk])
            if self.graph and len(chunk) < batch_size:  # one compiled shape per image size: pad the last batch
                batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - len(chunk), axis=0)])
            codes = self.model.encode(ms.Tensor(batch)).asnumpy()
            for i, grid in zip(chunk, codes):
                grids[i] = grid.astype(np.int32)
        return grids


def prepare(task, argv=None, default_image_area=None):
    import emu3  # noqa: F401  (before MindSpore loads: see emu3/_openmp.py)
    from tqdm import tqdm

    args = parse_args(task, argv, default_image_area)
    items = load_items(args.data_path)
    base = os.path.dirname(os.path.abspath(args.data_path))
    try:
        writer = ShardWriter(args.output_path)
    except NotADirectoryError as e:
        raise SystemExit(f"error: {e}") from None
    n_parts = math.ceil(len(items) / args.samples_per_part)
    todo = [i for i in range(n_parts) if not writer.done(i)]
    if len(todo) < n_parts:
        print(f"{n_parts - len(todo)} of {n_parts} parts already prepared in {writer.out_dir}: skipped")

    encoder = None
    needs_images = any(not (isinstance(i, dict) and "feature" in i) for i in items)
    if todo and task != "text" and needs_images:
        from emu3.device import select_device

        select_device()
        encoder = ImageEncoder(args.model_path, args.dtype, graph=args.mode == "graph")
    start = time.time()
    with tqdm(total=len(todo) and sum(min(args.samples_per_part, len(items) - i * args.samples_per_part)
                                      for i in todo), unit="sample", desc=f"prepare {task}") as bar:
        for part in todo:
            chunk = items[part * args.samples_per_part:(part + 1) * args.samples_per_part]
            records, skipped = _prepare_part(task, chunk, part * args.samples_per_part, base, args, encoder)
            writer.write(part, records, skipped)
            bar.update(len(chunk))

    metas = [writer.meta(i) for i in range(n_parts)]
    skipped = [s for m in metas for s in m["skipped"]]
    total = sum(m["samples"] for m in metas)
    info = {"task": task, "num_samples": total, "parts": [part_name(i) for i, m in enumerate(metas) if m["samples"]],
            "source": os.path.abspath(args.data_path), "image_area": getattr(args, "image_area", None)}
    report = {"inputs": len(items), "samples": total, "skipped": skipped}
    atomic_write_json(os.path.join(writer.out_dir, REPORT_FILE), report, indent=2, ensure_ascii=False)
    if total:
        writer.finish(info)
    print(f"{total} of {len(items)} inputs prepared into {writer.out_dir} ({len(info['parts'])} parts, "
          f"{time.time() - start:.1f} s)")
    if skipped:
        print(f"skipped {len(skipped)} inputs (details in {os.path.join(writer.out_dir, REPORT_FILE)}):")
        for s in skipped[:20]:
            print(f"  {s['name']}: {s['reason']}")
        if len(skipped) > 20:
            print(f"  … and {len(skipped) - 20} more")
    if not total:
        print("error: no usable input: every sample was skipped", file=sys.stderr)
        return 1
    return 0


def _prepare_part(task, chunk, offset, base, args, encoder):
    records, skipped, pending = [], [], []  # pending: (slot in records, name, text, response, image index)
    images, image_index = [], {}  # each image file is loaded and encoded once per part (VQA repeats pictures)
    for i, item in enumerate(chunk):
        if isinstance(item, dict) and "feature" in item:
            parsed = feature_item(item, offset + i, task)
        else:
            parsed = PARSERS[task](item, offset + i)
        if len(parsed) == 2:
            skipped.append({"name": parsed[0], "reason": parsed[1]})
            continue
        name, text, response, image = parsed
        if image is None or isinstance(image, np.ndarray):  # no image, or an already tokenised grid
            records.append(make_record(name, task, text, response, image))
            continue
        path = resolve_image(image, base)
        try:
            if path not in image_index:
                images.append(load_image(path, args.image_area))
                image_index[path] = len(images) - 1
            pending.append((len(records), name, text, response, image_index[path]))
            records.append(None)
        except ValueError as e:
            skipped.append({"name": name, "reason": str(e)})
    if pending:
        grids = encoder.encode(images, args.batch_size)
        for slot, name, text, response, index in pending:
            records[slot] = make_record(name, task, text, response, grids[index])
    return records, skipped
