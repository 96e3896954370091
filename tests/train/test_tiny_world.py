"""The main command, shortened (few pictures, few steps): every stage runs through the user-facing scripts, the
losses fall, the checkpoints load, images are generated and questions answered; a second run skips every stage."""

import json
import os

import pytest

from train import tiny_world

pytestmark = pytest.mark.slow


def test_tiny_world_end_to_end_and_resumed(tmp_path, capfd):
    out = tmp_path / "tiny-world"
    argv = ["--output-dir", str(out), "--train-per-combination", "2", "--eval-per-combination", "1",
            "--vq-steps", "8", "--llm-steps", "8"]
    tiny_world.main(argv)
    first_run = capfd.readouterr()
    # Every caption-and-picture and question-and-picture of the world fits the LLM's positions: none dropped.
    assert "longer than max_position_embeddings" not in first_run.out + first_run.err

    vq_log = [json.loads(line) for line in open(out / "runs" / "vision-tokenizer" / "train_log.jsonl")]
    llm_log = [json.loads(line) for line in open(out / "runs" / "llm" / "train_log.jsonl")]
    assert vq_log[-1]["reconstruction"] < vq_log[0]["reconstruction"]
    trained = [r["loss"] for r in llm_log if "loss" in r]
    assert trained[-1] < trained[0]
    # Evaluated on the evaluation pictures' captions and questions, seen and held-out apart, every 2 steps.
    sets = ("t2i_seen", "t2i_held_out", "vqa_seen", "vqa_held_out", "vqa_shape_seen", "vqa_shape_held_out")
    for name in sets:
        assert [r["step"] for r in llm_log if f"eval_{name}_loss" in r] == [2, 4, 6, 8], name
    counts = {name: r[f"eval_{name}_samples"] for r in llm_log[-len(sets):] for name in sets
              if f"eval_{name}_samples" in r}
    assert counts == {"t2i_seen": 36, "t2i_held_out": 12, "vqa_seen": 36 * 4, "vqa_held_out": 12 * 4,
                      "vqa_shape_seen": 36, "vqa_shape_held_out": 12}
    for folder, files in (("Emu3-VisionTokenizer", ("config.json", "model.safetensors", "preprocessor_config.json")),
                          ("Emu3-Tiny", ("config.json", "model.safetensors", "emu3.tiktoken",
                                         "emu3_vision_tokens.txt", "tokenizer_config.json"))):
        assert set(files) <= set(os.listdir(out / folder)), folder

    metrics = json.load(open(out / "metrics.json"))
    generated = metrics["text_to_image"]
    # one picture per seen caption, four per held-out caption
    assert generated["seen"]["count"] == 36 and generated["held_out"]["count"] == 12 * 4
    assert metrics["vqa"]["held_out"]["count"] == 12 * 4
    assert metrics["vision_tokenizer"]["psnr"] > 0
    assert set(metrics["llm"]["eval_loss"]) == set(sets)
    # The codes probe: trained on the training pictures' tokens, scored on every evaluation picture.
    assert metrics["codes"]["probe"]["seen"]["count"] == 36 and metrics["codes"]["probe"]["held_out"]["count"] == 12
    page = (out / "report.html").read_text()
    assert page.count("<img") >= 36 + 48 + 2 * 8 and "held out" in page and "What the tokens tell" in page

    # The task benchmarks take the tiny world's folders (one graph-mode row each here).
    import sys

    sys.path.insert(0, os.path.join(tiny_world.REPO, "scripts"))
    from bench_tasks import bench_tasks

    paths = ["--model-path", str(out / "Emu3-Tiny"), "--vq-path", str(out / "Emu3-VisionTokenizer"), "--batch", "2",
             "--mode", "graph", "--repeat", "1"]
    # With the PyTorch oracle's row beside ours: the same weights through transformers' own CFG and constraint.
    t2i, torch_t2i = bench_tasks("t2i", paths + ["--cfg", "batched", "--torch"])
    assert t2i["steps"] == 8 * 9 + 3 and float(t2i["tokens/s"]) > 0  # 8 rows of 8 codes + eol, then eof eoi eos
    assert torch_t2i["mode"].startswith("eager (torch") and torch_t2i["steps"] == t2i["steps"]
    (vqa,) = bench_tasks("vqa", paths + ["--max-new-tokens", "3"])
    assert 1 <= vqa["steps"] <= 3

    # The same LLM recipe on hand-made codes that keep shape apart from colour (train/world/oracle.py).
    from train.world import oracle

    capfd.readouterr()
    scores = oracle.main(["--world", str(out), "--llm-steps", "4"])
    assert scores["text_to_image"]["held_out"]["count"] == 12 * 4 and scores["vqa"]["seen"]["count"] == 36 * 4
    assert json.load(open(out / "oracle" / "metrics.json"))["codes"]["llm_steps"] == 4
    assert "codes shared across colours" in capfd.readouterr().out
    with pytest.raises(SystemExit, match="other settings"):  # its checkpoints are not resumed by another recipe
        oracle.main(["--world", str(out), "--llm-steps", "5"])
    with pytest.raises(SystemExit, match="hold 1 to 244 patterns"):  # refused before anything is written
        oracle.main(["--world", str(out), "--output-dir", str(tmp_path / "refused"), "--patterns", "999",
                     "--background-colour"])
    assert not (tmp_path / "refused").exists()

    capfd.readouterr()
    tiny_world.main(argv)  # everything done: every stage is skipped
    printed = capfd.readouterr().out
    assert printed.count("done earlier, skipped") == len(tiny_world.STAGES)

    with pytest.raises(SystemExit, match="other settings .*continue it with --llm-steps 8$"):
        tiny_world.main(argv[:-1] + ["9"])


def test_a_world_made_before_a_setting_existed_is_taken_at_its_default(tmp_path):
    marks = tmp_path / ".stages"
    marks.mkdir()
    old = {k: v for k, v in vars(tiny_world.parse_args([])).items() if k in tiny_world.SETTINGS}
    del old["vq_codebook_seeding"]  # settings.json of a world made before the flag
    (marks / "settings.json").write_text(json.dumps(old))
    tiny_world.World(tiny_world.parse_args(["--output-dir", str(tmp_path)])).check_settings()
    other = tiny_world.World(tiny_world.parse_args(["--output-dir", str(tmp_path), "--vq-codebook-seeding",
                                                    "kmeans++"]))
    with pytest.raises(SystemExit, match="vq_codebook_seeding random -> kmeans"):
        other.check_settings()


def test_a_world_made_with_an_older_default_is_refused_with_the_flags_that_continue_it(tmp_path):
    marks = tmp_path / ".stages"
    marks.mkdir()
    old = {k: v for k, v in vars(tiny_world.parse_args([])).items() if k in tiny_world.SETTINGS}
    default_steps, default_seed = old["llm_steps"], old["seed"]
    old.update(llm_steps=default_steps // 2, seed=default_seed + 1)  # made before the default grew, another seed
    (marks / "settings.json").write_text(json.dumps(old))
    with pytest.raises(SystemExit) as refused:
        tiny_world.World(tiny_world.parse_args(["--output-dir", str(tmp_path)])).check_settings()
    message = str(refused.value)
    assert f"llm_steps {default_steps // 2} -> {default_steps}" in message
    assert f"seed {default_seed + 1} -> {default_seed}" in message
    flags = message.split("continue it with ")[1].split()
    assert json.loads((marks / "settings.json").read_text()) == old  # the record is left as it was
    # The flags it names are the ones that are accepted.
    tiny_world.World(tiny_world.parse_args(["--output-dir", str(tmp_path), *flags])).check_settings()


def test_an_interrupted_stage_runs_again_and_counts_its_earlier_time(tmp_path, monkeypatch):
    world = tiny_world.World(tiny_world.parse_args(["--output-dir", str(tmp_path)]))
    world.check_settings()
    clock = iter([100.0, 130.0, 200.0, 210.0])
    monkeypatch.setattr(tiny_world.time, "time", lambda: next(clock))
    calls = []

    def interrupted():
        calls.append("first")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        world.run_stage(1, "data", interrupted)
    assert not (tmp_path / ".stages" / "data.json").exists()
    world.run_stage(1, "data", lambda: calls.append("second"))
    assert calls == ["first", "second"]
    assert json.load(open(tmp_path / ".stages" / "data.json"))["seconds"] == 40.0  # 30 s + 10 s
    assert not (tmp_path / ".stages" / "data.partial.json").exists()
    world.run_stage(1, "data", lambda: calls.append("third"))  # done: skipped
    assert calls == ["first", "second"] and world.timings["data"] == 40.0


@pytest.mark.parametrize("shortened", [False, True])
def test_stages_compile_only_when_the_work_pays_for_it(tmp_path, monkeypatch, shortened):
    """The default world compiles the vision tokenizer's training and the prepare scripts' encoder (docs/design.md:
    'Compiling pays only for long work'); the suite's shortened world runs them op by op."""
    flags = ["--output-dir", str(tmp_path), "--train-per-combination", "2", "--vq-steps", "8"] if shortened else \
        ["--output-dir", str(tmp_path)]
    world = tiny_world.World(tiny_world.parse_args(flags))
    world.data()
    commands = []
    monkeypatch.setattr(world, "run", lambda command, env=None: commands.append(command))
    monkeypatch.setattr(tiny_world, "_publish", lambda *args: None)
    world.vision_tokenizer()
    world.prepare()
    modes = [command[command.index("--mode") + 1] for command in commands]
    # then the LLM's six evaluation sets, at most 288 samples each: op by op
    assert modes == (["1", "pynative", "pynative"] if shortened else ["0", "graph", "graph"]) + ["pynative"] * 6
