"""The command-line entry points run end to end on a tiny random-weight model (pipeline checks, not quality)."""

import json
import math
import os
import sys

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))

import autoencode  # noqa: E402
import benchmark  # noqa: E402

# Four levels (spatial factor 8, as released) at minimal width, so 512x512 inputs stay cheap.
TINY_VQ = dict(codebook_size=256, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[3])


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cfg")
    (folder / "config.json").write_text(json.dumps(TINY_VQ))
    # Small pixel bounds keep the test fast; the script picks up a preprocessor config beside the model config.
    (folder / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 64 * 64, "max_pixels": 128 * 128}))
    return str(folder / "config.json")


@pytest.fixture(scope="module")
def saved_model(tiny_config, tmp_path_factory):
    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel

    folder = tmp_path_factory.mktemp("model")
    Emu3VisionVQModel(Emu3VisionVQConfig.from_pretrained(tiny_config)).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 96 * 96, "max_pixels": 128 * 128}))
    return str(folder)


def test_autoencode_random_weights_say_so(tiny_config, tmp_path, capsys):
    source = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(source)
    out = tmp_path / "out"
    psnr, ssim = autoencode.main(["--config", tiny_config, "--image", str(source), "--output-dir", str(out)])
    printed = capsys.readouterr().out
    assert "RANDOM weights" in printed and "PSNR" in printed and "img/s" in printed
    assert math.isfinite(psnr) and -1 <= ssim <= 1
    recon = Image.open(out / "reconstruction.png")
    assert recon.size == Image.open(out / "input.png").size == (80, 56)  # smart_resize(30, 40, min 64x64)


def test_autoencode_checkpoint_folder(saved_model, tmp_path, capsys):
    source = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(source)
    autoencode.main(["--model-path", saved_model, "--image", str(source), "--output-dir", str(tmp_path / "out")])
    assert "RANDOM" not in capsys.readouterr().out
    # The folder's own preprocessor_config.json (min 96x96 pixels) decides the size: smart_resize(300, 400) -> 104x144.
    assert Image.open(tmp_path / "out" / "reconstruction.png").size == (144, 104)


def test_autoencode_video_folder_and_frame_count_check(tiny_config, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(5):
        Image.new("RGB", (64, 64), (40 * i, 80, 120)).save(frames / f"{i:02d}.png")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="5 frames .* multiple of 4 — remove 1 frame"):
        autoencode.main(["--config", tiny_config, "--video-dir", str(frames), "--output-dir", str(out)])
    assert not out.exists()
    os.remove(frames / "04.png")
    autoencode.main(["--config", tiny_config, "--video-dir", str(frames), "--output-dir", str(out), "--mode", "graph"])
    assert sorted(os.listdir(out)) == [f"{kind}_{i:03d}.png" for kind in ("input", "reconstruction") for i in range(4)]


def test_benchmark_vq_table(tiny_config, capsys):
    rows = benchmark.main(["vq", "--config", tiny_config, "--resolution", "32", "48", "--repeat", "1", "--torch"])
    assert [(r["impl"].split()[0], r["mode"]) for r in rows] == [("mindspore", "pynative"), ("mindspore", "graph"),
                                                                ("torch", "eager")]
    assert all(r["resolution"] == "32x48" and float(r["s/step"]) > 0 for r in rows)
    assert "| img/s" in capsys.readouterr().out


def test_benchmark_rejects_bad_resolution():
    with pytest.raises(SystemExit):
        benchmark.parse_args(["vq", "--resolution", "30"])


TINY_LLM = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                attention_dropout=0.0, img_token_id=3, boi_token_id=4, eoi_token_id=5, eol_token_id=6,
                eof_token_id=7)


@pytest.fixture(scope="module")
def tiny_llm_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm") / "config.json"
    path.write_text(json.dumps(TINY_LLM))
    return str(path)


def test_benchmark_train_rows(tiny_llm_config, capsys):
    # Every row is a process of its own (a few seconds of imports each): two rows exercise both libraries' paths.
    rows = benchmark.main(["train", "--config", tiny_llm_config, "--rows", "graph", "torch",
                           "--recompute", "on", "--repeat", "1", "--seq-len", "16", "--peak-size", "128"])
    assert [(r["mode"], r["recompute"]) for r in rows] == [("graph", "ON"), ("eager", "ON")]
    for row in rows:
        assert row["s/step"] > 0 and row["peak MB"] > 0 and 0 < row["% of peak"]
        assert 0 < row["matmuls alone s"] and 0 < row["matmuls alone % of peak"]
        assert row["tokens/s"] > 0 and row["batch"] == "1x16"
    assert "| impl" in capsys.readouterr().out


def test_train_benchmark_counts_three_times_the_forward_flops():
    import bench_train

    c = dict(TINY_LLM)
    h, i, d = c["hidden_size"], c["intermediate_size"], c["hidden_size"] // c["num_attention_heads"]
    batch, seq = 2, 16
    per_token = 2 * (2 * h * h + 2 * h * c["num_key_value_heads"] * d + 3 * h * i)  # q o, k v, gate up down
    forward = batch * seq * (c["num_hidden_layers"] * per_token + 2 * h * c["vocab_size"])
    forward += c["num_hidden_layers"] * 2 * (2 * batch * seq * seq * h)  # scores and weighted values, full square
    for recompute, times in ((False, 3), (True, 4)):
        shapes = bench_train.step_matmul_shapes(c, batch, seq, recompute)
        assert bench_train.matmul_flops(shapes) == times * forward


def test_benchmark_decode_rows_and_summary(tiny_llm_config, capsys):
    rows = benchmark.main(["decode", "--config", tiny_llm_config, "--context", "8", "16", "--new-tokens", "3",
                           "--repeat", "1", "--torch"])
    whats = [(r["impl"].split()[0], r["mode"], r["context"], r["what"]) for r in rows]
    assert ("mindspore", "graph", 16, "greedy") in whats and ("torch", "eager", 8, "greedy") in whats
    assert ("mindspore", "graph", 8, "CFG batched (2 rows)") in whats
    assert ("mindspore", "graph", 8, "matmul kernels alone") in whats  # with attention products over that context
    assert all(float(r["ms/token"]) > 0 for r in rows)
    printed = capsys.readouterr().out
    assert "CFG speed-up, batched vs unbatched:" in printed and "graph speed-up over pynative:" in printed


def test_benchmark_load_reports_peak_memory(tiny_llm_config):
    rows = benchmark.main(["load", "--config", tiny_llm_config])
    assert [r["target dtype"] for r in rows] == ["fp32", "fp16"]
    assert all(float(r["peak RSS growth MiB"]) >= 0 for r in rows)


def test_the_venv_imports_emu3_from_any_directory(tmp_path):
    """The README's snippets run with .venv/bin/python from wherever the user is (scripts/setup.sh adds a .pth)."""
    import subprocess
    import sys

    code = "import emu3, emu3.mllm, train.sequences; print(emu3.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(os.path.join("emu3", "__init__.py"))


# ---- the README's commands as a new user runs them; checks before any model is loaded ------------------------------
def _run(cmd, tmp_path, **env):
    import subprocess

    full_env = dict(os.environ, GLOG_v="3", EMU3_CACHE_DIR=str(tmp_path / "cache"), **env)
    full_env.pop("PYTHONPATH", None)
    python = [sys.executable] if cmd[0].endswith(".py") else ["bash"]
    return subprocess.run(python + [os.path.join(REPO, "scripts", cmd[0]), *cmd[1:]], capture_output=True,
                          text=True, env=dict(full_env, PYTHON=sys.executable), timeout=600, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["infer_img_gen.sh", "infer_vqa.sh"])
def test_inference_scripts_run_without_paths(tmp_path, script):
    """No MODEL_PATH/VQ_PATH/TOKENIZER_PATH: random weights and the tokenizer files built into the cache."""
    # MAX_NEW_TOKENS: random weights rarely say eos, and the script's 1024 tokens would add a minute, not coverage.
    result = _run([script], tmp_path, OUTPUT_DIR=str(tmp_path / "out"), MAX_NEW_TOKENS="48")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RANDOM weights" in result.stdout and "built the Emu3 tokenizer files" in result.stdout
    if script == "infer_img_gen.sh":
        assert list((tmp_path / "out").glob("*.png"))
    else:
        assert "answers saved to" in result.stdout and (tmp_path / "out" / "answers.txt").is_file()


@pytest.mark.parametrize("cmd", [
    ["image_generation.py", "--output-dir", "{file}"],
    ["multimodal_understanding.py", "--output-dir", "{file}"],
    ["autoencode.py", "--output-dir", "{file}"],
])
def test_output_dir_that_is_a_file_fails_before_loading(tmp_path, cmd):
    (tmp_path / "afile").write_text("x")
    result = _run([c.format(file=tmp_path / "afile") for c in cmd], tmp_path)
    assert result.returncode != 0 and "is a file, not a folder" in result.stderr
    assert "RANDOM weights" not in result.stdout and "Traceback" not in result.stderr


@pytest.mark.parametrize("script", ["multimodal_understanding.py", "autoencode.py"])
def test_a_text_file_named_png_is_a_one_line_error(tmp_path, script):
    (tmp_path / "fake.png").write_text("not a picture")
    result = _run([script, "--image", str(tmp_path / "fake.png")], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "fake.png" in result.stderr and "not a readable image" in result.stderr


@pytest.mark.parametrize("script", ["autoencode.py", "image_generation.py", "multimodal_understanding.py"])
def test_missing_model_folder_is_the_same_error_everywhere(tmp_path, script):
    result = _run([script, "--model-path", "/nope"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "error: --model-path '/nope' is not a folder" in result.stderr


@pytest.mark.parametrize("script", ["autoencode.py", "image_generation.py", "multimodal_understanding.py"])
def test_wrong_paths_are_answered_before_mindspore_loads(tmp_path, script):
    """Loading MindSpore takes seconds: a mistyped path is reported without it."""
    import subprocess

    (tmp_path / "afile").write_text("x")
    path = os.path.join(REPO, "scripts", script)
    argv = [path, "--model-path", "/nope", "--output-dir", str(tmp_path / "afile")]
    code = (f"import runpy, sys\nsys.argv = {argv!r}\n"
            f"try:\n    runpy.run_path({path!r}, run_name='__main__')\nexcept SystemExit as e:\n    print(e)\n"
            "print('mindspore loaded:', 'mindspore' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "error: " in result.stdout and "mindspore loaded: False" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("script", ["autoencode.py", "image_generation.py", "multimodal_understanding.py"])
def test_bf16_on_cpu_is_refused_up_front(tmp_path, script):
    result = _run([script, "--dtype", "bf16"], tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "bf16 needs an Ascend device" in result.stderr and "fp16" in result.stderr
    assert not (tmp_path / "rank_0").exists(), "no compiler dumps in the user's directory"


def test_bf16_model_on_cpu_is_refused_by_the_api():
    from emu3.nn.precision import PrecisionPolicy

    with pytest.raises(ValueError, match="bf16 needs an Ascend device"):
        PrecisionPolicy.for_device("bf16")


def test_shell_entry_points_take_paths_relative_to_the_users_folder(saved_model, tmp_path):
    """MODEL_PATH, IMAGE and OUTPUT_DIR are the user's relative paths (the scripts do not cd into the repository)."""
    os.symlink(saved_model, tmp_path / "vq")
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(tmp_path / "a.png")
    result = _run(["infer_img_rec.sh"], tmp_path, MODEL_PATH="vq", IMAGE="a.png", OUTPUT_DIR="out")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "out" / "reconstruction.png").is_file()
