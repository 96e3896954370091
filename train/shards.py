"""Token shards: the one on-disk format between data preparation and training, for every task.

A prepared folder holds MindRecord parts (``part-00000.mindrecord`` + its ``.db`` index, ``samples_per_part``
samples each, in input order) and ``dataset_info.json``, written last. One record per sample:

    name      the input's name or id (reported in logs and skip lists)
    task      "t2i" | "vqa" | "text"
    text      the caption (t2i) or the question without "<image>" (vqa, text)
    response  the answer ("" for t2i)
    image     the visual-token grid, flattened row-major, int32 (one dummy 0 when there is no image:
              MindRecord cannot store empty arrays)
    height, width   the grid's size (0, 0 without an image)

Prompts are built and tokenised at training time, as the original does, so one prepared folder serves any
``--null_prompt_prob``, template or ``--max_position_embeddings``. A part is written in a temporary folder and
moved in, then its ``part-NNNNN.json`` (sample count, skipped inputs) is written: that file marks the part
complete, and a rerun skips the parts that have it.
"""

import glob
import json
import os
import shutil
import tempfile

import numpy as np

from emu3.atomic import atomic_write_json, umask_mode

INFO_FILE = "dataset_info.json"
FORMAT = "emu3-token-shards"
FORMAT_VERSION = 1
TASKS = ("t2i", "vqa", "text")
SCHEMA = {
    "name": {"type": "string"},
    "task": {"type": "string"},
    "text": {"type": "string"},
    "response": {"type": "string"},
    "image": {"type": "int32", "shape": [-1]},
    "height": {"type": "int32"},
    "width": {"type": "int32"},
}
# Read by the length pass of the dataset index (no image data needed).
INDEX_COLUMNS = ["task", "text", "response", "height", "width"]


def part_name(index):
    return f"part-{index:05d}.mindrecord"


def make_record(name, task, text="", response="", grid=None):
    """One shard row; ``grid`` is an (h, w) array of codebook indices or None."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if grid is None:
        image, height, width = np.zeros(1, np.int32), 0, 0
    else:
        grid = np.asarray(grid)
        if grid.ndim != 2 or grid.size == 0:
            raise ValueError(f"{name}: a token grid must be a non-empty (h, w) array, got shape {grid.shape}")
        image, (height, width) = grid.astype(np.int32).reshape(-1), grid.shape
    return {"name": str(name), "task": task, "text": str(text), "response": str(response), "image": image,
            "height": int(height), "width": int(width)}


class ShardWriter:
    """Writes the parts of one prepared folder; ``done(i)`` says whether part i is already complete."""

    def __init__(self, out_dir):
        self.out_dir = os.path.abspath(out_dir)
        if os.path.exists(self.out_dir) and not os.path.isdir(self.out_dir):
            raise NotADirectoryError(f"--output-path {out_dir!r} exists and is not a folder")
        os.makedirs(self.out_dir, exist_ok=True)
        for stale in glob.glob(os.path.join(self.out_dir, ".tmp-*")):  # a part interrupted mid-write
            shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.remove(stale)

    def path(self, index):
        return os.path.join(self.out_dir, part_name(index))

    def meta_path(self, index):
        return os.path.join(self.out_dir, f"part-{index:05d}.json")

    def done(self, index):
        """A part is complete once its meta file exists (written after its data)."""
        return os.path.isfile(self.meta_path(index))

    def meta(self, index):
        with open(self.meta_path(index), encoding="utf-8") as f:
            return json.load(f)

    def write(self, index, records, skipped=()):
        """Write part ``index`` atomically: its data (none when every input was skipped), then its meta file
        ({"samples": n, "skipped": [{"name", "reason"}...]}), whose presence marks the part complete."""
        from mindspore.mindrecord import FileWriter

        if records:
            tmp = tempfile.mkdtemp(dir=self.out_dir, prefix=f".tmp-part-{index:05d}-")
            try:
                path = os.path.join(tmp, part_name(index))
                writer = FileWriter(path, shard_num=1, overwrite=True)
                writer.add_schema(SCHEMA, "emu3_tokens")
                writer.write_raw_data(records)
                writer.commit()
                os.replace(path + ".db", self.path(index) + ".db")
                os.replace(path, self.path(index))
                for name in (self.path(index), self.path(index) + ".db"):
                    os.chmod(name, umask_mode())
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        atomic_write_json(self.meta_path(index), {"samples": len(records), "skipped": list(skipped)}, indent=2,
                          ensure_ascii=False)

    def finish(self, info):
        """Write ``dataset_info.json`` (atomically) once every part is done."""
        atomic_write_json(os.path.join(self.out_dir, INFO_FILE), {"format": FORMAT, "version": FORMAT_VERSION, **info},
                          indent=2, ensure_ascii=False)


class ShardReader:
    """Random access to the samples of one or more prepared folders (global index = order of the parts)."""

    def __init__(self, paths):
        paths = [paths] if isinstance(paths, str) else list(paths)
        self.files, self.info = [], []
        for path in paths:
            info_path = os.path.join(path, INFO_FILE)
            if not os.path.isdir(path):
                raise FileNotFoundError(f"{path!r} is not a folder; pass the --output-path of "
                                        "train/prepare_vision_data.py (or prepare_vqa_data.py / prepare_text_data.py)")
            if not os.path.isfile(info_path):
                raise FileNotFoundError(f"{path!r} has no {INFO_FILE}: it is not a prepared folder, or its "
                                        "preparation did not finish — run the prepare script again (it resumes)")
            with open(info_path, encoding="utf-8") as f:
                info = json.load(f)
            if info.get("format") != FORMAT or info.get("version") != FORMAT_VERSION:
                raise ValueError(f"{info_path} is not an {FORMAT} v{FORMAT_VERSION} folder")
            self.info.append(info)
            self.files += [os.path.join(path, name) for name in info["parts"]]
        if not self.files:
            raise ValueError(f"no samples in {paths}: the prepared folder is empty (every input was skipped? see "
                             "its prepare_report.json)")
        self.num_samples = sum(i["num_samples"] for i in self.info)

    def read(self, indices, columns=None):
        """Yield the records at ``indices`` in that order, as dicts of numpy values / str."""
        import mindspore.dataset as ds

        indices = [int(i) for i in indices]
        if not indices:
            return
        dataset = ds.MindDataset(self.files, columns_list=columns, sampler=ds.SubsetSampler(indices),
                                 num_parallel_workers=1)
        for row in dataset.create_dict_iterator(output_numpy=True, num_epochs=1):
            yield {k: _plain(v) for k, v in row.items()}

    def read_all(self, columns=None):
        return self.read(range(self.num_samples), columns)


def _plain(value):
    """Strings come back from MindRecord as 0-d numpy arrays (str or bytes); arrays stay arrays."""
    if value.dtype.kind == "U":
        return str(value)
    if value.dtype.kind == "S":
        return value.item().decode("utf-8")
    return value

