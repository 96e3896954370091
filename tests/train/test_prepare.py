"""Data preparation: inputs -> token shards, as the original prepares images; skips are reported, not fatal;
a rerun resumes; bad arguments are clear errors before any model is loaded."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import mindspore as ms

from emu3.tokenizer import Emu3VisionVQImageProcessor, Emu3VisionVQModel
from train.shards import ShardReader

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script, *args, **env_overrides):
    env = dict(os.environ, GLOG_v="3", **env_overrides)
    return subprocess.run([sys.executable, os.path.join(REPO, "train", script), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def t2i_out(tmp_path_factory, vq_dir, inputs_dir):
    out = tmp_path_factory.mktemp("prepared") / "t2i"
    result = run("prepare_vision_data.py", "--model-path", vq_dir, "--data-path", inputs_dir / "t2i.json",
                 "--output-path", out, "--image-area", 32 * 32, "--samples-per-part", 3)
    assert result.returncode == 0, result.stderr
    return out, result


def test_t2i_records_are_the_encoded_resized_images(t2i_out, vq_dir, inputs_dir):
    out, _ = t2i_out
    reader = ShardReader(str(out))
    records = list(reader.read_all())
    items = [i for i in json.loads((inputs_dir / "t2i.json").read_text()) if i["name"].startswith("pic")]
    assert [r["name"] for r in records] == [i["name"] for i in items], "input order kept, bad inputs left out"
    vq = Emu3VisionVQModel.from_pretrained(vq_dir)
    processor = Emu3VisionVQImageProcessor.from_pretrained(vq_dir)
    for record, item in zip(records[:3], items):
        with Image.open(inputs_dir / item["image"]) as im:
            im = im.convert("RGB")
        s = math.sqrt(32 * 32 / (im.height * im.width))
        im = im.resize((round(im.width * s), round(im.height * s)))
        pixels = processor(im, return_tensors="np")["pixel_values"]
        expected = vq.encode(ms.Tensor(pixels)).asnumpy()[0]
        assert (record["height"], record["width"]) == expected.shape == (4, 4)
        np.testing.assert_array_equal(record["image"].reshape(expected.shape), expected)
        assert record["text"] == item["text"] and record["task"] == "t2i" and record["response"] == ""


def test_skipped_inputs_are_named_in_a_summary_and_a_report(t2i_out):
    out, result = t2i_out
    report = json.loads((out / "prepare_report.json").read_text())
    reasons = {s["name"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == {"missing", "corrupt", "silent"}
    assert "not found" in reasons["missing"] and "unreadable" in reasons["corrupt"] and "empty" in reasons["silent"]
    assert report["samples"] == 8 and report["inputs"] == 11
    for name in reasons:
        assert name in result.stdout


def test_rerun_skips_finished_parts_and_completes_a_missing_one(t2i_out, vq_dir, inputs_dir):
    out, _ = t2i_out
    before = {p: os.path.getmtime(out / p) for p in ("part-00000.mindrecord", "part-00001.mindrecord")}
    os.remove(out / "part-00002.json")  # as if the run had been interrupted while writing part 2
    (out / ".tmp-part-00002-x").mkdir()  # and its temporary folder left behind
    result = run("prepare_vision_data.py", "--model-path", vq_dir, "--data-path", inputs_dir / "t2i.json",
                 "--output-path", out, "--image-area", 32 * 32, "--samples-per-part", 3)
    assert result.returncode == 0, result.stderr
    assert "3 of 4 parts already prepared" in result.stdout
    assert {p: os.path.getmtime(out / p) for p in before} == before
    assert not (out / ".tmp-part-00002-x").exists()
    assert ShardReader(str(out)).num_samples == 8


def test_graph_mode_writes_the_same_records(t2i_out, tmp_path, vq_dir, inputs_dir):
    """--mode graph encodes with compiled graphs; batches of 2 over parts of 3 samples leave a last batch of 1, padded
    to the compiled batch size and cut back."""
    out, _ = t2i_out
    result = run("prepare_vision_data.py", "--model-path", vq_dir, "--data-path", inputs_dir / "t2i.json",
                 "--output-path", tmp_path / "graph", "--image-area", 32 * 32, "--samples-per-part", 3,
                 "--batch-size", 2, "--mode", "graph",
                 EMU3_OPERATOR_FUSION="0")  # the plain compile is enough here, and faster
    assert result.returncode == 0, result.stderr
    expected = list(ShardReader(str(out)).read_all())
    records = list(ShardReader(str(tmp_path / "graph")).read_all())
    assert [r["name"] for r in records] == [r["name"] for r in expected]
    for record, reference in zip(records, expected):
        np.testing.assert_array_equal(record["image"], reference["image"])


def test_vqa_and_text_records(tmp_path, vq_dir, inputs_dir):
    result = run("prepare_vqa_data.py", "--model-path", vq_dir, "--data-path", inputs_dir / "vqa.json",
                 "--output-path", tmp_path / "vqa", "--image-area", 32 * 32)
    assert result.returncode == 0, result.stderr
    first = next(ShardReader(str(tmp_path / "vqa")).read([0]))
    assert first["text"] == "What colour is the shape?" and first["response"] == "red" and first["height"] == 4
    result = run("prepare_text_data.py", "--data-path", inputs_dir / "text.json", "--output-path", tmp_path / "text")
    assert result.returncode == 0, result.stderr
    first = next(ShardReader(str(tmp_path / "text")).read([0]))
    assert (first["task"], first["text"], first["response"], first["height"]) == ("text", "What is 0 plus 0?", "0", 0)


def test_bad_arguments_are_clear_errors(tmp_path, vq_dir, inputs_dir):
    (tmp_path / "empty.json").write_text("[]")
    (tmp_path / "broken.json").write_text("{oops")
    (tmp_path / "afile").write_text("x")
    cases = [
        (["--data-path", tmp_path / "empty.json", "--output-path", tmp_path / "o1"], "empty list"),
        (["--data-path", tmp_path / "broken.json", "--output-path", tmp_path / "o2"], "not valid JSON"),
        (["--data-path", tmp_path / "nope.json", "--output-path", tmp_path / "o3"], "does not exist"),
        (["--data-path", inputs_dir / "text.json", "--output-path", tmp_path / "afile"], "is not a folder"),
    ]
    for args, message in cases:
        result = run("prepare_text_data.py", *args)
        assert result.returncode != 0 and message in result.stderr + result.stdout, (args, result.stderr)
    result = run("prepare_vision_data.py", "--model-path", tmp_path / "nope", "--data-path", inputs_dir / "t2i.json",
                 "--output-path", tmp_path / "o4", "--image-area", 1024)
    assert result.returncode != 0 and "is not a folder" in result.stderr


def test_all_inputs_skipped_is_an_error_not_an_empty_dataset(tmp_path, vq_dir):
    (tmp_path / "bad.json").write_text(json.dumps([{"name": "a", "text": "x", "image": "missing.png"}]))
    result = run("prepare_vision_data.py", "--model-path", vq_dir, "--data-path", tmp_path / "bad.json",
                 "--output-path", tmp_path / "out", "--image-area", 1024)
    assert result.returncode == 1 and "every sample was skipped" in result.stderr
    with pytest.raises(FileNotFoundError, match="did not finish"):
        ShardReader(str(tmp_path / "out"))


def test_original_and_mindone_prepared_folders_are_converted(tmp_path):
    """list/train.json + feature/*.pth (original, torch.save) and feature/*.ckpt (mindone, save_checkpoint)."""
    import torch

    feature = tmp_path / "old" / "feature"
    feature.mkdir(parents=True)
    grid = np.arange(6, dtype=np.int64).reshape(2, 3)
    torch.save({"name": "a", "images": grid, "texts": "a cat"}, feature / "a.pth")
    ms.save_checkpoint([], str(feature / "b.ckpt"),
                       append_dict={"name": "b", "images": ms.Tensor(grid[::-1].astype(np.int32)), "texts": "a dog"})
    (feature / "c.pth").write_bytes(b"garbage")
    (tmp_path / "old" / "list").mkdir()
    listing = {"prefix": "/moved/away/feature", "path_list": ["a.pth", "b.ckpt", "c.pth"]}
    (tmp_path / "old" / "list" / "train.json").write_text(json.dumps(listing))
    result = run("prepare_vision_data.py", "--model-path", tmp_path / "no_vq_needed", "--data-path",
                 tmp_path / "old" / "list" / "train.json", "--output-path", tmp_path / "new")
    assert result.returncode == 0, result.stderr
    records = list(ShardReader(str(tmp_path / "new")).read_all())
    assert [(r["name"], r["text"]) for r in records] == [("a", "a cat"), ("b", "a dog")]
    np.testing.assert_array_equal(records[0]["image"].reshape(2, 3), grid)
    np.testing.assert_array_equal(records[1]["image"].reshape(2, 3), grid[::-1])
    assert "c: unreadable feature file" in result.stdout


def test_a_picture_asked_about_twice_is_encoded_once(tmp_path):
    from types import SimpleNamespace

    from train import prepare

    for name, colour in (("a.png", (255, 0, 0)), ("b.png", (0, 0, 255))):
        Image.new("RGB", (16, 16), colour).save(tmp_path / name)
    items = [{"id": f"q{i}", "image": image, "conversations": [{"from": "human", "value": "<image>\nWhat?"},
                                                              {"from": "gpt", "value": "x"}]}
             for i, image in enumerate(["a.png", "b.png", "a.png", "a.png"])]

    class CountingEncoder:
        calls = []

        def encode(self, images, batch_size):
            self.calls.append(len(images))
            return [np.full((2, 2), int(np.asarray(im)[0, 0, 2] > 0), np.int32) for im in images]

    records, skipped = prepare._prepare_part("vqa", items, 0, str(tmp_path), SimpleNamespace(image_area=16 * 16,
                                             batch_size=8), CountingEncoder())
    assert CountingEncoder.calls == [2] and not skipped
    assert [int(r["image"].reshape(-1)[0]) for r in records] == [0, 1, 0, 0]
