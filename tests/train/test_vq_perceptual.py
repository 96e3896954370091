"""The vision tokenizer's optional perceptual term: LPIPS with VGG16 (train/vq_perceptual.py) against the formula
written in PyTorch here (values and gradients, random weights of the real shapes), the weights file's converter and
check (train/lpips_weights.py), and the training script with the term on."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.numpy import save_file

from train import lpips_weights
from train.lpips_weights import EPS, POOLS, SCALE, SHIFT, TAPS, VGG16_CONVS, weight_names


def random_weights(seed=0):
    """VGG16 + LPIPS tensors of the released shapes (He-initialised convolutions, non-negative LPIPS weights)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_names().items():
        if name.startswith("lin"):
            weights[name] = rng.uniform(0.0, 1.0, shape).astype(np.float32)
        elif name.endswith("bias"):
            weights[name] = rng.normal(0.0, 0.01, shape).astype(np.float32)
        else:
            weights[name] = (rng.normal(0.0, 1.0, shape) * np.sqrt(2.0 / np.prod(shape[1:]))).astype(np.float32)
    return weights


def torch_lpips(weights, x, y):
    """LPIPS v0.1 as its paper and the lpips package define it, in PyTorch: (B,) distances."""
    w = {k: torch.from_numpy(v) for k, v in weights.items()}
    shift, scale = torch.tensor(SHIFT).view(1, 3, 1, 1), torch.tensor(SCALE).view(1, 3, 1, 1)

    def taps(h):
        h, out = (h - shift) / scale, []
        for index, _, _ in VGG16_CONVS:
            if index - 1 in POOLS:
                h = F.max_pool2d(h, 2, 2)
            h = F.relu(F.conv2d(h, w[f"features.{index}.weight"], w[f"features.{index}.bias"], padding=1))
            if index in TAPS:
                out.append(h)
        return out

    total = 0
    for tap, (a, b) in enumerate(zip(taps(x), taps(y))):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + EPS)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + EPS)
        total = total + F.conv2d((a - b) ** 2, w[f"lin{tap}.model.1.weight"]).mean(dim=(2, 3))[:, 0]
    return total


@pytest.fixture(scope="module")
def weights():
    return random_weights()


def test_lpips_and_its_gradient_match_the_formula_in_pytorch(weights):
    import mindspore as ms

    from train.vq_perceptual import LPIPS

    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 3, 32, 32)).astype(np.float32)
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    cell = LPIPS(weights)
    ours = cell(ms.Tensor(x), ms.Tensor(y)).asnumpy()
    tx = torch.from_numpy(x).requires_grad_(True)
    want = torch_lpips(weights, tx, torch.from_numpy(y))
    want.sum().backward()
    np.testing.assert_allclose(ours, want.detach().numpy(), rtol=1e-4)
    grad = ms.grad(lambda a: cell(a, ms.Tensor(y)).sum())(ms.Tensor(x)).asnumpy()
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-3, atol=1e-4 * np.abs(tx.grad.numpy()).max())
    # A distance: zero for the same pictures, symmetric, and no gradient reaches the frozen network.
    np.testing.assert_allclose(cell(ms.Tensor(x), ms.Tensor(x)).asnumpy(), 0.0, atol=1e-7)
    np.testing.assert_allclose(cell(ms.Tensor(y), ms.Tensor(x)).asnumpy(), ours, rtol=1e-5)
    assert not cell.trainable_params()


def test_the_converter_keeps_what_lpips_needs_and_refuses_other_files(weights, tmp_path):
    from safetensors.numpy import load_file

    vgg = {k: torch.from_numpy(v) for k, v in weights.items() if k.startswith("features.")}
    vgg["classifier.0.weight"] = torch.zeros(4, 4)  # torchvision's file holds the classifier too
    lin = {k: torch.from_numpy(v) for k, v in weights.items() if k.startswith("lin")}
    torch.save(vgg, tmp_path / "vgg16.pth")
    torch.save(lin, tmp_path / "vgg.pth")
    out = tmp_path / "lpips.safetensors"
    assert lpips_weights.main(["--vgg", str(tmp_path / "vgg16.pth"), "--lpips", str(tmp_path / "vgg.pth"),
                               "--out", str(out)]) == 0
    converted = load_file(str(out))
    assert converted.keys() == weight_names().keys()
    for name, value in converted.items():
        np.testing.assert_array_equal(value, weights[name])
    lpips_weights.check_weights_file(str(out))
    with pytest.raises(SystemExit, match="lin0.model.1.weight.* not found"):  # the LPIPS file given twice
        lpips_weights.convert(str(tmp_path / "vgg16.pth"), str(tmp_path / "vgg16.pth"), str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()
    # The check reads headers only and names what is wrong.
    save_file({k: v for k, v in weights.items() if k != "features.28.bias"}, str(tmp_path / "short.safetensors"))
    with pytest.raises(ValueError, match=r"features.28.bias missing \(needs \(512,\)\)"):
        lpips_weights.check_weights_file(str(tmp_path / "short.safetensors"))
    (tmp_path / "text.safetensors").write_text("not tensors")
    with pytest.raises(ValueError, match="is not a safetensors file"):
        lpips_weights.check_weights_file(str(tmp_path / "text.safetensors"))


@pytest.mark.slow
def test_the_tokenizer_trains_with_the_perceptual_term(weights, tmp_path, capsys):
    from train import train_vision_tokenizer
    from train.world import shapes

    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, attrs in enumerate(shapes.attributes()[:4]):
        record = shapes.sample(rng, *attrs)
        shapes.render(*attrs, record["x"], record["y"]).resize((16, 16)).save(folder / f"{i}.png")
    config = tmp_path / "vq.json"
    config.write_text(json.dumps(dict(codebook_size=16, embed_dim=4, z_channels=4, ch=32, ch_mult=[1, 1, 1, 1],
                                      num_res_blocks=1, attn_resolutions=[], dropout=0.0)))
    file = tmp_path / "lpips.safetensors"
    save_file(weights, str(file))
    base = ["--config_name", str(config), "--train_data_path", str(folder), "--image_size", "16",
            "--per_device_train_batch_size", "2", "--logging_steps", "1", "--eval_images", "2", "--mode", "1"]
    out = tmp_path / "run"
    train_vision_tokenizer.main(base + ["--output_dir", str(out), "--max_steps", "2", "--perceptual_weight", "1.0",
                                        "--perceptual_weights", str(file)])
    log = [json.loads(line) for line in open(out / "train_log.jsonl")]
    assert all(r["perceptual"] > 0 and r["loss"] > r["reconstruction"] + r["perceptual"] for r in log)
    assert "perceptual" in capsys.readouterr().out

    def refused(*extra):
        with pytest.raises(SystemExit):
            train_vision_tokenizer.parse_args(base + ["--output_dir", str(tmp_path / "no"), *extra])
        return capsys.readouterr().err

    assert "needs --perceptual_weights" in refused("--perceptual_weight", "1")
    assert "which is off" in refused("--perceptual_weights", str(file))
    assert "is not a file" in refused("--perceptual_weight", "1", "--perceptual_weights", str(tmp_path / "nope"))
    assert "too small for VGG16" in refused("--perceptual_weight", "1", "--perceptual_weights", str(file),
                                            "--image_size", "8")
    assert not (tmp_path / "no").exists()
