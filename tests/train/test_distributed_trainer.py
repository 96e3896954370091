"""The SFT trainer in 2 processes under msrun, through the user's script (scripts/t2i_sft_seq_parallel.sh with
NPUS=2 SP=2, ZeRO-3): the same model as one process, rank shards + the assembled released-layout model in every
checkpoint, exact resume, offline combining; and the errors users hit before and during a launch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from emu3.mllm import Emu3ForCausalLM
from train.arguments import parse_args
from train.launch import _failed_rank, _run_quietly
from train.trainer import Trainer, TrainingError
from conftest import REPO

STEPS = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--learning_rate", "1e-2", "--lr_scheduler_type", "linear",
         "--warmup_steps", "1", "--per_device_train_batch_size", "2", "--null_prompt_prob", "0.0",
         "--logging_steps", "1", "--seed", "3"]
# The script's recipe, made tiny, fp32 and pynative (fp16 on CPU is covered by the single-device tests; SP and
# ZeRO in compiled graphs by tests/parallel).
TINY_RECIPE = ["--fp16", "False", "--mode", "1", "--image_area", "1024", "--max_position_embeddings", "96",
               "--trainable_hidden_layers", "2", *STEPS]


def run_script(script, out, model, data, npus=2, sp=2, zero=3, extra=(), port=None):
    env = dict(os.environ, GLOG_v="3", NPUS=str(npus), ZERO_STAGE=str(zero), MODEL_PATH=model,
               DATA_PATH=data, OUTPUT_DIR=str(out), PYTHON=sys.executable)
    if sp is not None:
        env["SP"] = str(sp)
    if port:
        env["MASTER_PORT"] = str(port)
    return subprocess.run(["bash", os.path.join(REPO, "scripts", script), *TINY_RECIPE, *extra],
                          capture_output=True, text=True, env=env, timeout=900)


def evaluation(data):
    """Evaluation flags: every 2 steps and at the end, in batches of 3 (8 samples: a partial batch)."""
    return ["--eval_data_path", data, "--eval_steps", "2", "--per_device_eval_batch_size", "3"]


@pytest.fixture(scope="module")
def single(tmp_path_factory, llm_dir, t2i_data):
    """The same script with NPUS=1 (SP unset: the recipe's 8 reduced to 1): one process, no msrun, the same
    global batch (2 samples per step)."""
    out = tmp_path_factory.mktemp("single") / "run"
    result = run_script("t2i_sft_seq_parallel.sh", out, llm_dir, t2i_data, npus=1, sp=None,
                        extra=evaluation(t2i_data))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "msrun" not in result.stdout
    return out


@pytest.fixture(scope="module")
def parallel(tmp_path_factory, llm_dir, t2i_data):
    out = tmp_path_factory.mktemp("parallel") / "run"
    result = run_script("t2i_sft_seq_parallel.sh", out, llm_dir, t2i_data, extra=evaluation(t2i_data))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, result


def assert_same_model(a, b, rtol=1e-4, atol=1e-5):
    want, got = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert want.keys() == got.keys()
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.slow
def test_sp2_zero3_trains_the_model_one_process_trains(single, parallel):
    out, result = parallel
    assert "msrun: 2 processes, SP 2" in result.stdout
    assert_same_model(single, out)
    single_log = [json.loads(x) for x in (single / "train_log.jsonl").read_text().splitlines()]
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], "eval_loss" in r) for r in log] == [(1, False), (2, False), (2, True), (3, False), (4, False),
                                                             (4, True)]
    for key in ("loss", "eval_loss"):  # evaluation too: the ranks' token slices summed to the one process's loss
        np.testing.assert_allclose([r[key] for r in log if key in r], [r[key] for r in single_log if key in r],
                                   rtol=1e-5)
    assert json.loads((out / "eval_results.json").read_text())["eval_tokens"] == \
        json.loads((single / "eval_results.json").read_text())["eval_tokens"]
    Emu3ForCausalLM.from_pretrained(str(out))  # the assembled model loads as a released folder


@pytest.mark.slow
def test_checkpoints_hold_rank_shards_and_the_assembled_model(parallel):
    out, _ = parallel
    ckpt = out / "checkpoint-2"
    names = {p.name for p in ckpt.iterdir()}
    assert {"rank-0-of-2.safetensors", "rank-1-of-2.safetensors", "model.safetensors", "config.json",
            "trainer_state.json"} <= names
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["sequence_parallel_shards"] == 2 and state["ms_zero_stage"] == 3
    model = load_file(str(ckpt / "model.safetensors"))
    shards = [load_file(str(ckpt / f"rank-{r}-of-2.safetensors")) for r in range(2)]
    q = "model.layers.0.self_attn.q_proj.weight"
    rows = model[q].shape[0]
    assert shards[0]["param." + q].shape[0] == rows // 2  # each rank holds half of the rows
    np.testing.assert_array_equal(np.concatenate([s["param." + q] for s in shards]), model[q])
    assert "param.model.norm.weight" in shards[0] and "param.model.norm.weight" not in shards[1]


@pytest.mark.slow
def test_combine_checkpoint_rebuilds_the_model_offline(parallel, tmp_path):
    out, _ = parallel
    ckpt = out / "checkpoint-2"
    combined = tmp_path / "combined"
    result = subprocess.run([sys.executable, os.path.join(REPO, "train", "combine_checkpoint.py"),
                             "--checkpoint_dir", str(ckpt), "--output_dir", str(combined)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert_same_model(ckpt, combined, rtol=0, atol=0)
    Emu3ForCausalLM.from_pretrained(str(combined))


@pytest.mark.slow
def test_resume_after_a_stop_equals_uninterrupted(parallel, tmp_path, llm_dir, t2i_data):
    out, _ = parallel
    stopped = tmp_path / "stopped"
    os.makedirs(stopped)
    # A run stopped right after its step-2 checkpoint: that checkpoint is all that is left.
    subprocess.run(["cp", "-r", str(out / "checkpoint-2"), str(stopped / "checkpoint-2")], check=True)
    # Resumed without evaluation: the same model as the evaluated run (evaluating leaves training as it was).
    result = run_script("t2i_sft_seq_parallel.sh", stopped, llm_dir, t2i_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resumed from" in result.stdout + result.stderr
    assert_same_model(out, stopped, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_resume_under_another_process_layout_is_refused_before_starting(parallel, tmp_path, llm_dir, t2i_data):
    out, _ = parallel
    other = tmp_path / "other"
    subprocess.run(["cp", "-r", str(out), str(other)], check=True)
    # The script refuses before launching any process...
    result = run_script("t2i_sft_seq_parallel.sh", other, llm_dir, t2i_data, npus=2, sp=1, zero=2)
    assert result.returncode == 2
    assert ("was written by a run with world_size 2, sequence_parallel_shards 2, ms_zero_stage 3; this run has "
            "world_size 2, sequence_parallel_shards 1, ms_zero_stage 2. Resume with NPUS=2 SP=2 ZERO_STAGE=3") \
        in result.stderr
    # ...and so does the trainer when started another way.
    args = parse_args(["--model_name_or_path", llm_dir, "--train_data_path", t2i_data, "--output_dir", str(other)])
    with pytest.raises(TrainingError, match="world_size 2, sequence_parallel_shards 2, ms_zero_stage 3; this run "
                                            "has world_size 1"):
        Trainer(args)


def _rank_process(rank, marker):
    """pid of the worker process of ``rank`` whose command line mentions ``marker`` (msrun sets RANK_ID)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if "train/train.py" in cmdline and marker in cmdline and f"RANK_ID={rank}".encode() in environ:
            return int(pid)
    return None


@pytest.mark.slow
def test_a_killed_rank_stops_the_others_with_a_message(tmp_path, llm_dir, t2i_data):
    """Rank 1 killed mid-run (as the kernel's OOM killer would): the launch ends, names the rank, points at the logs."""
    out = tmp_path / "killed"
    env = dict(os.environ, GLOG_v="3", NPUS="2", SP="1", ZERO_STAGE="0", MODEL_PATH=llm_dir, DATA_PATH=t2i_data,
               OUTPUT_DIR=str(out), PYTHON=sys.executable)
    launch = subprocess.Popen(["bash", os.path.join(REPO, "scripts", "t2i_sft_seq_parallel.sh"), *TINY_RECIPE,
                               "--max_steps", "100000"],  # the last one counts: runs until killed
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 300
        while not (out / "train_log.jsonl").exists():  # rank 0 logs step 1: both ranks are training
            assert launch.poll() is None and time.monotonic() < deadline, launch.communicate()
            time.sleep(1)
        victim = _rank_process(1, str(out))
        assert victim, "rank 1's process was not found"
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        stdout, stderr = launch.communicate(timeout=240)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode != 0
    # msrun alone waits out the dead rank's heartbeat (~30 s more); the launcher stops its scheduler instead.
    assert time.monotonic() - killed < 20, time.monotonic() - killed
    assert "distributed training stopped" in stderr and "rank 1" in stderr, stderr[-2000:]
    assert "Traceback" not in stdout, stdout[-2000:]  # msrun's own traceback: the message above says it all
    assert _rank_process(0, str(out)) is None  # rank 0 did not stay behind, waiting on a collective


def test_a_failed_rank_is_named_with_its_error(tmp_path):
    (tmp_path / "worker_0.log").write_text("step 1/4 loss 5.1\n[WARNING] DISTRIBUTED ... connection lost\n")
    (tmp_path / "worker_1.log").write_text("Traceback (most recent call last):\n  File ...\n"
                                           "ValueError: shard 1 is unreadable\n")
    assert _failed_rank(str(tmp_path))[:2] == ("1", "ValueError: shard 1 is unreadable")
    # The rank msrun saw die first is the one named, found by the pid line each rank logs; killed: no error line.
    (tmp_path / "worker_0.log").write_text("rank 0 of 2: process 4242\nRuntimeError: collective timed out\n")
    (tmp_path / "worker_1.log").write_text("rank 1 of 2: process 4343\nstep 1/4 loss 5.1\n")
    assert _failed_rank(str(tmp_path), [(4343, -9), (4242, 1)])[:2] == ("1", "killed by SIGKILL (out of memory?)")
    assert _failed_rank(str(tmp_path), [(4242, 1)])[:2] == ("0", "RuntimeError: collective timed out")
    assert _failed_rank(str(tmp_path))[:2] == ("0", "RuntimeError: collective timed out")


def test_msruns_own_traceback_is_left_out_after_a_worker_failed(capsys):
    """msrun ends a failed launch with a traceback of its own (the launcher's message names the rank instead); a
    worker's traceback, passed through by msrun, is kept."""
    lines = ["step 1/4 loss 5.1", "Traceback (most recent call last):", '  File "train/train.py", line 3, in <module>',
             "ValueError: a worker's own error",
             "[ERROR] ME(1:2,MainProcess): Worker process 4343 exit with exception. Error code: 1.",
             "Traceback (most recent call last):", '  File "/venv/bin/msrun", line 6, in <module>',
             "    sys.exit(main())",
             "RuntimeError: Distributed job exited with exception. Please check logs in directory: logs.",
             "after"]
    code, exits = _run_quietly(["printf", "%s\\n", *lines])
    assert code == 0 and exits == [(4343, 1)]
    assert capsys.readouterr().out.splitlines() == lines[:5] + ["after"]


def test_launch_errors_before_any_work(tmp_path, llm_dir, vq_dir, t2i_data, vqa_data):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        result = run_script("t2i_sft_seq_parallel.sh", tmp_path / "a", llm_dir, t2i_data, port=busy.getsockname()[1])
    finally:
        busy.close()
    assert result.returncode == 2 and "is in use" in result.stderr
    result = run_script("vqa_sft_seq_parallel.sh", tmp_path / "b", llm_dir, t2i_data, npus=3, sp=2)
    assert result.returncode == 2 and "NPUS=3 must be a positive multiple of SP=2" in result.stderr
    # A wrong training flag, or flags that point at the wrong things: one error from the launcher, before msrun
    # starts any rank (which would each load MindSpore and print the same error), and nothing written.
    wrong = {"--load_best_model_at_end needs --eval_data_path": (t2i_data, 2, ["--load_best_model_at_end", "True"]),
             "--train_data_path: ": (str(tmp_path), 2, []),  # a folder, but not a prepared one
             "--eval_data_path held_out=: ": (t2i_data, 2, ["--eval_data_path", f"held_out={tmp_path / 'nope'}"]),
             "--train_data_path: a VQA/text sample has no visual tokens": (vqa_data, 2, []),  # the T2I recipe's loss
             "the model folder has no usable tokenizer files": (t2i_data, 2, ["--model_name_or_path", vq_dir]),
             # the tiny model has 4 query and 2 key-value heads
             "--sequence_parallel_shards 4 must divide num_key_value_heads (2)": (t2i_data, 4, []),
             "--sequence_parallel_shards 2 must divide the padded sequence length": (
                 t2i_data, 2, ["--max_position_embeddings", "97"])}
    for i, (message, (data, sp, extra)) in enumerate(wrong.items()):
        result = run_script("t2i_sft_seq_parallel.sh", tmp_path / f"c{i}", llm_dir, data, npus=sp, sp=sp,
                            extra=extra)
        assert result.returncode == 2 and f"error: {message}" in result.stderr, (message, result.stderr[-2000:])
        assert result.stderr.count("error:") == 1 and "msrun" not in result.stdout, message
        assert not (tmp_path / f"c{i}").exists(), message
