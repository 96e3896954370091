"""The trainer end to end on the tiny world: outputs in the released layout, exact resume (also after a save
that died half-way), frozen layers, fp16, and clear errors for bad input."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from emu3.mllm import Emu3ForCausalLM, Emu3Tokenizer
from train import checkpointing
from train.arguments import parse_args
from train.trainer import Trainer, TrainingError
from conftest import REPO, make_llm_dir

def flags(model, data, out, *extra):
    return ["--model_name_or_path", model, "--train_data_path", data, "--output_dir", str(out), "--mode", "1",
            "--learning_rate", "1e-2", "--lr_scheduler_type", "cosine_with_min_lr", "--min_learning_rate", "1e-3",
            "--warmup_steps", "1", "--weight_decay", "0.1", "--null_prompt_prob", "0.5", "--logging_steps", "1",
            "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "2", "--max_steps", "6",
            "--save_steps", "2", *map(str, extra)]


def train(argv, log=None):
    trainer = Trainer(parse_args(argv), log=log or (lambda *a: None))
    trainer.train()
    return trainer


def killed_at_step_4_save(monkeypatch, argv):
    """Train with ``argv`` until the process is "killed" while writing checkpoint-4."""
    real_save = checkpointing.save_file

    def dies_at_step_4(tensors, path, *a, **k):
        if "checkpoint-4" in path:
            raise KeyboardInterrupt("killed while saving")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(checkpointing, "save_file", dies_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        train(argv)
    monkeypatch.setattr(checkpointing, "save_file", real_save)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, llm_dir, t2i_data):
    out = tmp_path_factory.mktemp("run") / "full"
    train(flags(llm_dir, t2i_data, out))
    return out


def test_outputs_are_released_layout_folders(uninterrupted):
    out = uninterrupted
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    for folder in (out, out / "checkpoint-4"):
        model = Emu3ForCausalLM.from_pretrained(str(folder))  # strict: released names, every tensor
        assert model.config.max_position_embeddings == 96
        for name in ("emu3.tiktoken", "emu3_vision_tokens.txt", "tokenizer_config.json"):
            assert (folder / name).is_file()
    assert {"optimizer.safetensors", "trainer_state.json"} <= {p.name for p in (out / "checkpoint-4").iterdir()}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert log[0]["lr"] == 0.0 and all(r["tokens_per_s"] > 0 for r in log)
    assert log[-1]["loss"] < log[1]["loss"], "the loss falls"
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_a_stop_and_a_killed_save_equals_uninterrupted(tmp_path, llm_dir, t2i_data, uninterrupted,
                                                                    monkeypatch):
    out = tmp_path / "run"
    killed_at_step_4_save(monkeypatch, flags(llm_dir, t2i_data, out))
    assert [s for s, _ in checkpointing.checkpoints(str(out))] == [2], "a half-written save is never a checkpoint"
    # A hard kill leaves its temporary folder behind (no finally runs): the next run must ignore and remove it.
    stale = out / ".tmp-checkpoint-4-killed"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")

    messages = []
    train(flags(llm_dir, t2i_data, out), log=messages.append)  # auto-resumes from the newest checkpoint
    assert any("resumed from" in m and "checkpoint-2" in m for m in messages)
    assert not stale.exists()
    expected = load_file(str(uninterrupted / "model.safetensors"))
    resumed = load_file(str(out / "model.safetensors"))
    assert expected.keys() == resumed.keys()
    for name in expected:
        np.testing.assert_allclose(resumed[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6], "steps trained again are logged once"


def test_frozen_layers_and_fp16(tmp_path, llm_dir, vqa_data):
    out = tmp_path / "run"
    argv = flags(llm_dir, vqa_data, out, "--max_steps", 2, "--trainable_hidden_layers", 1, "--fp16", "True",
                 "--apply_loss_on_only_vision", "False", "--apply_loss_on_only_text", "True", "--save_steps", 100)
    trainer = train(argv)
    assert trainer.scaler.kind == "dynamic" and trainer.scaler.scale == 1024.0
    before, after = load_file(os.path.join(llm_dir, "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(v.dtype == np.float32 for v in after.values()), "exported from the fp32 master weights"
    for name in before:
        changed = not np.array_equal(before[name], after[name])
        assert changed == (not name.startswith("model.layers.0.")), name


def test_trained_model_runs_through_the_inference_scripts(uninterrupted, vq_dir, tmp_path):
    env = dict(os.environ, GLOG_v="3")
    common = ["--model-path", str(uninterrupted), "--vq-path", vq_dir, "--mode", "pynative"]
    gen = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "image_generation.py"), *common,
                          "--prompt", "a red square", "--output-dir", str(tmp_path / "gen")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert gen.returncode == 0, gen.stderr
    assert list((tmp_path / "gen").glob("*.png"))
    picture = next((tmp_path / "gen").glob("*.png"))
    vqa = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "multimodal_understanding.py"), *common,
                          "--image", str(picture), "--prompt", "What colour is the shape?", "--max-new-tokens", "4",
                          "--output-dir", str(tmp_path / "vqa")], capture_output=True, text=True, env=env, timeout=300)
    assert vqa.returncode == 0, vqa.stderr
    assert (tmp_path / "vqa" / "answers.txt").is_file()


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_unknown_flag_is_named(capsys, llm_dir, t2i_data, tmp_path):
    with pytest.raises(SystemExit):
        parse_args(flags(llm_dir, t2i_data, tmp_path, "--learning_rat", "1", "--fp16", "maybe"))
    err = capsys.readouterr().err
    assert "--fp16" in err or "--learning_rat" in err
    with pytest.raises(SystemExit):
        parse_args(flags(llm_dir, t2i_data, tmp_path, "--warmup_step", "3"))
    assert "unknown argument(s): --warmup_step" in capsys.readouterr().err
    args = parse_args(flags(llm_dir, t2i_data, tmp_path, "--fp16", "--gradient_checkpointing", "false"))
    assert args.fp16 is True and args.gradient_checkpointing is False


def test_resume_from_another_model_config_is_refused(tmp_path, tokenizer_dir, t2i_data, uninterrupted):
    other = make_llm_dir(tmp_path / "other", tokenizer_dir, hidden_size=64, intermediate_size=96)
    with pytest.raises(TrainingError, match="another model config.*hidden_size"):
        Trainer(parse_args(flags(other, t2i_data, tmp_path / "run", "--resume", uninterrupted / "checkpoint-4")))


def test_model_folder_without_tokenizer_files(tmp_path, llm_dir, t2i_data):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        os.symlink(os.path.join(llm_dir, name), bare / name)
    with pytest.raises(TrainingError, match="no usable tokenizer files.*tokenizer_files"):
        Trainer(parse_args(flags(str(bare), t2i_data, tmp_path / "run")))


def test_samples_that_do_not_fit_are_dropped_and_counted(tmp_path, llm_dir, t2i_data):
    messages = []
    with pytest.raises(TrainingError, match="no sample fits in max_position_embeddings = 20"):
        Trainer(parse_args(flags(llm_dir, t2i_data, tmp_path / "a", "--max_position_embeddings", 20)),
                log=messages.append)
    assert any("dropped 8 of 8 samples" in m for m in messages)


def test_unfinished_or_missing_data_and_wrong_task_flags(tmp_path, llm_dir, vqa_data):
    vqa_loss = ["--apply_loss_on_only_vision", "False", "--apply_loss_on_only_text", "True"]
    (tmp_path / "half").mkdir()
    with pytest.raises(TrainingError, match="did not finish"):
        Trainer(parse_args(flags(llm_dir, str(tmp_path / "half"), tmp_path / "a")))
    with pytest.raises(TrainingError, match="--eval_data_path held_out=: '.*nope' is not a folder"):
        Trainer(parse_args(flags(llm_dir, vqa_data, tmp_path / "a", *vqa_loss, "--eval_data_path",
                                 f"held_out={tmp_path}/nope")))
    assert not (tmp_path / "a").exists()  # refused before anything is written
    with pytest.raises(TrainingError, match="apply_loss_on_only_text True"):
        Trainer(parse_args(flags(llm_dir, vqa_data, tmp_path / "b")))  # VQA data with the T2I default
    with pytest.raises(TrainingError, match="bf16 needs an Ascend"):
        Trainer(parse_args(flags(llm_dir, vqa_data, tmp_path / "c", *vqa_loss, "--bf16", "True")))


def _loss_of(model_dir, data, tokenizer_dir):
    """Mean next-token loss of the saved model over every sample of ``data`` (T2I, visual tokens supervised),
    computed here one unpadded sample at a time, in numpy, in inference mode (no dropout)."""
    import mindspore as ms

    from train.sequences import IGNORE_INDEX, SequenceBuilder
    from train.shards import ShardReader

    model = Emu3ForCausalLM.from_pretrained(model_dir)
    model.set_train(False)
    builder = SequenceBuilder(Emu3Tokenizer.from_pretrained(tokenizer_dir), "vision")
    total, count = 0.0, 0
    for record in ShardReader(data).read_all():
        ids, labels = builder.build(record)
        logits = model(ms.Tensor(np.asarray(ids, np.int32)[None]))[1].asnumpy()[0].astype(np.float64)
        log_probs = logits - logits.max(-1, keepdims=True)
        log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
        targets = np.asarray(labels[1:])
        supervised = np.flatnonzero(targets != IGNORE_INDEX)
        total -= log_probs[supervised, targets[supervised]].sum()
        count += len(supervised)
    return total / count, count


def test_evaluation_is_the_models_loss_on_the_eval_data(tmp_path, tokenizer_dir, llm_dir, t2i_data,
                                                         uninterrupted):
    """--eval_data_path: logged every --eval_steps and at the end (eval_results.json), equal to the loss of the
    saved model computed sample by sample; with dropout in the config (as the released one), batches of 3 over 8
    samples (a partial batch), and without changing training."""
    llm = make_llm_dir(tmp_path / "llm", tokenizer_dir, attention_dropout=0.1)
    messages = []
    evaluated = tmp_path / "evaluated"
    train(flags(llm, t2i_data, evaluated, "--max_steps", 4, "--eval_data_path", t2i_data, "--eval_steps", 2,
                "--per_device_eval_batch_size", 3), log=messages.append)
    log = [json.loads(line) for line in (evaluated / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], "eval_loss" in r) for r in log] == [(1, False), (2, False), (2, True), (3, False),
                                                             (4, False), (4, True)]
    results = json.loads((evaluated / "eval_results.json").read_text())
    want, tokens = _loss_of(str(evaluated), t2i_data, tokenizer_dir)
    assert results["step"] == 4 and results["eval_samples"] == 8 and results["eval_tokens"] == tokens
    np.testing.assert_allclose(results["eval_loss"], want, rtol=1e-5)
    np.testing.assert_allclose(results["eval_perplexity"], np.exp(want), rtol=1e-5)
    assert any(m.startswith("eval step 2/4: eval_loss ") for m in messages)
    # Evaluating leaves training as it was (a model without dropout: the run of the fixture, 6 steps).
    train(flags(llm_dir, t2i_data, tmp_path / "again", "--eval_data_path", t2i_data, "--eval_strategy", "epoch"))
    want = load_file(str(uninterrupted / "model.safetensors"))
    got = load_file(str(tmp_path / "again" / "model.safetensors"))
    assert all(np.array_equal(want[name], got[name]) for name in want)
    epochs = [r for r in map(json.loads, (tmp_path / "again" / "train_log.jsonl").read_text().splitlines())
              if "eval_loss" in r]
    assert [r["step"] for r in epochs] == [4, 6]  # 8 samples, 2 per step: an epoch every 4 steps; then the end
    with pytest.raises(SystemExit):
        parse_args(flags(llm, t2i_data, tmp_path / "x", "--eval_strategy", "steps"))  # evaluate on what?
    with pytest.raises(TrainingError, match="^--eval_data_path: '.*nope' is not a folder; pass the --output-path"):
        Trainer(parse_args(flags(llm, t2i_data, tmp_path / "x", "--eval_data_path", tmp_path / "nope")))


def test_named_evaluation_sets_are_logged_apart(tmp_path, tokenizer_dir, llm_dir, t2i_data):
    """NAME=FOLDER entries of --eval_data_path: one eval_NAME_* record per set and evaluation (HF's dict of eval
    datasets), folders of one name evaluated together, unnamed folders still eval_loss; each set's loss is the
    saved model's loss on its samples."""
    out = tmp_path / "named"
    messages = []
    train(flags(llm_dir, t2i_data, out, "--max_steps", 2, "--eval_steps", 1, "--eval_data_path", f"first={t2i_data}",
                f"second={t2i_data}", t2i_data, f"second={t2i_data}"), log=messages.append)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evaluated = [(r["step"], next(k for k in r if k.endswith("_loss"))) for r in log if "loss" not in r]
    assert evaluated == [(1, "eval_first_loss"), (1, "eval_second_loss"), (1, "eval_loss")] + \
        [(2, "eval_first_loss"), (2, "eval_second_loss"), (2, "eval_loss")]
    results = json.loads((out / "eval_results.json").read_text())
    want, tokens = _loss_of(str(out), t2i_data, tokenizer_dir)
    for prefix, copies in (("eval_first", 1), ("eval_second", 2), ("eval", 1)):
        np.testing.assert_allclose(results[f"{prefix}_loss"], want, rtol=1e-5)
        np.testing.assert_allclose(results[f"{prefix}_perplexity"], np.exp(want), rtol=1e-5)
        assert (results[f"{prefix}_samples"], results[f"{prefix}_tokens"]) == (8 * copies, tokens * copies)
    assert any(m.startswith("eval step 2/2: eval_second_loss ") for m in messages)
    assert (out / "loss.png").stat().st_size > 0
    for entry in ("held-out=x", "=x", "a="):
        with pytest.raises(SystemExit):
            parse_args(flags(llm_dir, t2i_data, tmp_path / "x", "--eval_data_path", entry))
    with pytest.raises(TrainingError, match="^--eval_data_path first=: '.*nope' is not a folder"):
        Trainer(parse_args(flags(llm_dir, t2i_data, tmp_path / "x", "--eval_data_path", f"first={tmp_path}/nope")))


def _weights_equal(a, b):
    a, b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def test_load_best_model_at_end(tmp_path, llm_dir, t2i_data, monkeypatch, capsys):
    """--load_best_model_at_end: the final model is the best evaluated checkpoint's, that checkpoint outlives
    --save_total_limit, eval_results.json is its evaluation, and a resumed run still knows it. The loss falls
    every evaluation here, so --greater_is_better True makes the first checkpoint the best."""
    best_first = ["--eval_data_path", f"data={t2i_data}", "--eval_steps", 2, "--load_best_model_at_end", "True",
                  "--save_total_limit", 1]
    out = tmp_path / "first"
    messages = []
    train(flags(llm_dir, t2i_data, out, *best_first, "--metric_for_best_model", "data_loss", "--greater_is_better",
                "True"), log=messages.append)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert _weights_equal(out, out / "checkpoint-2") and not _weights_equal(out, out / "checkpoint-4")
    Emu3ForCausalLM.from_pretrained(str(out))  # a whole released-layout model
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    evaluated = {r["step"]: r["eval_data_loss"] for r in log if "eval_data_loss" in r}
    assert list(evaluated) == [2, 4, 6] and evaluated[2] > evaluated[4] > evaluated[6]
    results = json.loads((out / "eval_results.json").read_text())
    assert results["step"] == 2 and results["eval_data_loss"] == evaluated[2]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["best_model_checkpoint"].endswith("checkpoint-2") and state["best_metric"] == evaluated[2]
    assert any("the best checkpoint's, checkpoint-2 (eval_data_loss" in m for m in messages)

    # Lower is better (the default for a loss): the final weights are the best, kept as trained.
    out = tmp_path / "last"
    train(flags(llm_dir, t2i_data, out, *best_first))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-4"]
    assert json.loads((out / "eval_results.json").read_text())["step"] == 6
    assert not _weights_equal(out, out / "checkpoint-4")

    # Resumed after a kill at step 4's save: the best (step 2) is read back from checkpoint-2.
    out = tmp_path / "resumed"
    argv = flags(llm_dir, t2i_data, out, *best_first, "--greater_is_better", "True")
    killed_at_step_4_save(monkeypatch, argv)
    train(argv)
    assert _weights_equal(out, out / "checkpoint-2")
    assert json.loads((out / "eval_results.json").read_text())["step"] == 2

    # The best checkpoint deleted by hand during the run: the final weights are saved instead, with a warning.
    out, messages, real_save = tmp_path / "gone", [], checkpointing.save_file

    def deletes_checkpoint_2(tensors, path, *a, **k):
        if "checkpoint-4" in path:
            shutil.rmtree(out / "checkpoint-2")
        return real_save(tensors, path, *a, **k)

    monkeypatch.setattr(checkpointing, "save_file", deletes_checkpoint_2)
    train(flags(llm_dir, t2i_data, out, *best_first, "--greater_is_better", "True"), log=messages.append)
    monkeypatch.setattr(checkpointing, "save_file", real_save)
    assert any("checkpoint-2 is gone" in m for m in messages)
    Emu3ForCausalLM.from_pretrained(str(out))
    assert not _weights_equal(out, out / "checkpoint-4")
    assert json.loads((out / "eval_results.json").read_text())["step"] == 6

    for extra, problem in ((["--load_best_model_at_end"], "needs --eval_data_path"),
                           (best_first + ["--save_strategy", "epoch"], "--eval_strategy and --save_strategy"),
                           (best_first + ["--save_steps", 3], "a multiple of --eval_steps")):
        with pytest.raises(SystemExit):
            parse_args(flags(llm_dir, t2i_data, tmp_path / "x", *extra))
        assert problem in capsys.readouterr().err
    with pytest.raises(TrainingError, match="--metric_for_best_model eval_other_loss: the evaluation logs "
                                            "eval_data_loss$"):
        Trainer(parse_args(flags(llm_dir, t2i_data, tmp_path / "x", *best_first, "--metric_for_best_model",
                                 "other_loss")))


def test_the_best_checkpoints_model_files_are_copied_without_its_training_state(tmp_path):
    """A ZeRO checkpoint holds rank files, the optimizer and the trainer state beside the released-layout model:
    only the model (config, weights, tokenizer files) becomes the final model; files already there are replaced."""
    best, out = tmp_path / "checkpoint-2", tmp_path / "out"
    (best / "sub").mkdir(parents=True)
    out.mkdir()
    for name in ("config.json", "model.safetensors", "emu3.tiktoken", "optimizer.safetensors", "trainer_state.json",
                 "rank-0-of-2.safetensors", "rank-1-of-2.safetensors"):
        (best / name).write_text(name)
    (out / "model.safetensors").write_text("the last weights")
    checkpointing.copy_model_files(str(best), str(out))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "emu3.tiktoken", "model.safetensors"]
    assert (out / "model.safetensors").read_text() == "model.safetensors"


@pytest.mark.parametrize("script, data", [("t2i_sft_single.sh", "t2i_data"), ("vqa_sft_single.sh", "vqa_data")])
def test_single_device_scripts_pass_extra_flags_through(request, tmp_path, llm_dir, script, data):
    env = dict(os.environ, MODEL_PATH=llm_dir, DATA_PATH=request.getfixturevalue(data),
               OUTPUT_DIR="run", PYTHON=sys.executable)  # a relative path: the user's folder, not the repository's
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", script), "--max_steps", "1", "--fp16", "False",
                             "--gradient_checkpointing", "False", "--mode", "1", "--image_area", "1024",
                             "--max_position_embeddings", "96"], capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "step 1/1" in result.stdout and "float32" in result.stdout
    assert (tmp_path / "run" / "model.safetensors").is_file()
    env.pop("DATA_PATH")
    result = subprocess.run(["bash", os.path.join(REPO, "scripts", script)], capture_output=True, text=True, env=env,
                            cwd=tmp_path)
    assert result.returncode != 0 and "set DATA_PATH" in result.stderr
