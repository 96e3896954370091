"""train/train_vision_tokenizer.py as users run it: from a config, on a folder of pictures; checkpoints that resume
to the same weights as an uninterrupted run; a final folder the inference side loads."""

import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from train import train_vision_tokenizer
from train.world import shapes

pytestmark = pytest.mark.slow

CONFIG = dict(codebook_size=16, embed_dim=4, z_channels=4, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1,
              attn_resolutions=[], temporal_downsample_factor=4, dropout=0.0)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    for i, attrs in enumerate(shapes.attributes()[:12]):
        record = shapes.sample(rng, *attrs)
        shapes.render(*attrs, record["x"], record["y"]).resize((32, 32)).save(folder / f"{i:02d}.png")
    (folder / "notes.txt").write_text("not a picture")
    config = tmp_path_factory.mktemp("config") / "vq.json"
    config.write_text(json.dumps(CONFIG))
    return str(folder), str(config)


def _run(pictures, out, *extra):
    folder, config = pictures
    train_vision_tokenizer.main(["--config_name", config, "--train_data_path", folder, "--output_dir", str(out),
                                 "--image_size", "32", "--per_device_train_batch_size", "4", "--learning_rate",
                                 "3e-3", "--logging_steps", "1", "--save_steps", "2", "--eval_images", "4",
                                 "--codebook_restart_steps", "2", "--mode", "1", *extra])


def test_trains_saves_and_resumes_exactly(pictures, tmp_path):
    from emu3.tokenizer import Emu3VisionVQImageProcessor, Emu3VisionVQModel

    whole = tmp_path / "whole"
    _run(pictures, whole, "--max_steps", "4")
    log = [json.loads(line) for line in open(whole / "train_log.jsonl")]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert log[-1]["reconstruction"] < log[0]["reconstruction"]
    assert sorted(os.listdir(whole / "checkpoint-2")) == ["config.json", "model.safetensors", "optimizer.safetensors",
                                                          "preprocessor_config.json", "trainer_state.json"]
    results = json.load(open(whole / "eval_results.json"))
    assert results["images"] == 4 and np.isfinite(results["psnr"]) and 0 < results["codebook_usage"] <= 1
    assert (whole / "reconstructions.png").is_file() and (whole / "loss.png").is_file()
    model = Emu3VisionVQModel.from_pretrained(str(whole))  # the released layout
    assert Emu3VisionVQImageProcessor.from_pretrained(str(whole)).max_pixels == 32 * 32
    assert model.config.codebook_size == 16

    # Stopped after step 2 (its checkpoint), then the same command again: continues to the same weights.
    part = tmp_path / "part"
    _run(pictures, part, "--max_steps", "2")
    os.makedirs(part / "checkpoint-2")
    for name in os.listdir(whole / "checkpoint-2"):
        (part / "checkpoint-2" / name).write_bytes((whole / "checkpoint-2" / name).read_bytes())
    _run(pictures, part, "--max_steps", "4")
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(part / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert [r["step"] for r in map(json.loads, open(part / "train_log.jsonl"))] == [1, 2, 3, 4]


def test_bad_input_is_named(pictures, tmp_path, capsys):
    folder, config = pictures
    with pytest.raises(SystemExit):
        train_vision_tokenizer.parse_args(["--config_name", config, "--train_data_path", folder, "--output_dir",
                                           str(tmp_path), "--image_size", "30"])
    assert "multiple of 8" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no images"):
        _run((str(tmp_path), config), tmp_path / "run", "--max_steps", "1")
    with pytest.raises(SystemExit, match="fewer than one batch"):
        _run(pictures, tmp_path / "run", "--max_steps", "1", "--per_device_train_batch_size", "64")


def test_a_fresh_decoder_starts_with_a_scaled_output_layer(pictures, tmp_path):
    folder, config = pictures

    def trainer(out, *extra):
        args = train_vision_tokenizer.parse_args(["--train_data_path", folder, "--output_dir", str(tmp_path / out),
                                                  "--image_size", "32", "--per_device_train_batch_size", "4",
                                                  *extra])
        return train_vision_tokenizer.VisionTokenizerTrainer(args, log=lambda *_: None)

    def weights(t):
        return {name: p.asnumpy() for name, p in t.model.parameters_and_names()}

    scaled, released = weights(trainer("a", "--config_name", config)), \
        weights(trainer("b", "--config_name", config, "--output_init_scale", "1"))
    for name in released:  # same seed: only the decoder's last convolution differs, by the factor
        expected = released[name] * 0.1 if name == "decoder.conv_out.weight" else released[name]
        np.testing.assert_allclose(scaled[name], expected, rtol=1e-6, err_msg=name)

    # Continuing a trained tokenizer never rescales it.
    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel

    Emu3VisionVQModel(Emu3VisionVQConfig(**CONFIG)).save_pretrained(str(tmp_path / "trained"))
    trained = load_file(str(tmp_path / "trained" / "model.safetensors"))
    continued = weights(trainer("c", "--model_name_or_path", str(tmp_path / "trained")))
    np.testing.assert_array_equal(continued["decoder.conv_out.weight"], trained["decoder.conv_out.weight"])


def test_the_adversarial_term_starts_when_asked_and_resumes_exactly(pictures, tmp_path):
    gan = ("--gan_weight", "0.1", "--gan_start_step", "1", "--discriminator_layers", "2",
           "--discriminator_channels", "8")
    whole = tmp_path / "whole"
    _run(pictures, whole, "--max_steps", "4", *gan)
    log = [json.loads(line) for line in open(whole / "train_log.jsonl")]
    assert ["adversarial" in r for r in log] == [False, True, True, True]  # after one step without it
    assert all(np.isfinite(r["discriminator"]) and r["discriminator"] >= 0 for r in log[1:])
    saved = load_file(str(whole / "checkpoint-2" / "optimizer.safetensors"))
    assert any(k.startswith("discriminator.") and k.endswith("moving_mean") for k in saved)
    assert any(k.startswith("discriminator_optimizer.exp_avg.") for k in saved)
    # The released-layout model holds the tokenizer only.
    assert not any("discriminator" in k for k in load_file(str(whole / "model.safetensors")))

    # Resumed from step 2: the discriminator and its optimizer come back too, so the run ends where it would have.
    part = tmp_path / "part"
    os.makedirs(part / "checkpoint-2")
    for name in os.listdir(whole / "checkpoint-2"):
        (part / "checkpoint-2" / name).write_bytes((whole / "checkpoint-2" / name).read_bytes())
    _run(pictures, part, "--max_steps", "4", *gan)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    resumed = [json.loads(line) for line in open(part / "train_log.jsonl")]
    assert resumed[-1]["discriminator"] == pytest.approx(log[-1]["discriminator"], rel=1e-4)

    # Without the flag, that checkpoint is refused with the reason, and nothing is trained.
    logged = (part / "train_log.jsonl").read_text()
    with pytest.raises(SystemExit, match="--gan_weight"):
        _run(pictures, part, "--max_steps", "6")
    assert (part / "train_log.jsonl").read_text() == logged


def test_a_discriminator_too_deep_for_the_pictures_is_refused(pictures, tmp_path, capsys):
    folder, config = pictures
    with pytest.raises(SystemExit):
        train_vision_tokenizer.parse_args(["--config_name", config, "--train_data_path", folder, "--output_dir",
                                           str(tmp_path), "--image_size", "16", "--gan_weight", "0.1"])
    assert "too small for a discriminator of 3 layers" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the term's settings without the term: said, not silently ignored
        train_vision_tokenizer.parse_args(["--config_name", config, "--train_data_path", folder, "--output_dir",
                                           str(tmp_path), "--gan_start_step", "100"])
    assert "--gan_start_step set the adversarial term, which is off" in capsys.readouterr().err
