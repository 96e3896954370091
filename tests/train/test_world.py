"""The tiny world's pieces: the picture scorer on the world's own pictures, and a small BPE vocabulary of its own
loaded by the same Emu3Tokenizer."""

import numpy as np
import pytest
from PIL import ImageFilter

from emu3.mllm import Emu3Tokenizer
from emu3.mllm.tokenizer_files import write_tokenizer_folder
from emu3.mllm.tokenization_emu3 import write_tiktoken_bpe
from train.bpe import learn_bpe
from train.world import checker, shapes


def test_scorer_reads_every_ground_truth_picture():
    rng = np.random.default_rng(0)
    for attrs in shapes.attributes():
        for _ in range(3):
            record = shapes.sample(rng, *attrs)
            image = shapes.render(*attrs, record["x"], record["y"])
            assert all(checker.score(image, record).values()), (record, checker.describe(image))


@pytest.mark.parametrize("radius", [1.5, 2])
def test_scorer_reads_blurred_pictures(radius):
    # A decoder's output has soft edges; blurring must not turn squares into circles (a corner test did at 1.5 px).
    rng = np.random.default_rng(1)
    for attrs in shapes.attributes():
        record = shapes.sample(rng, *attrs)
        image = shapes.render(*attrs, record["x"], record["y"]).filter(ImageFilter.GaussianBlur(radius))
        assert all(checker.score(image, record).values()), (record, checker.describe(image))


def test_scorer_finds_no_shape_on_a_blank_picture():
    blank = np.full((64, 64, 3), 255, np.uint8)
    assert checker.describe(blank) == {"background": "white", "colour": None, "shape": None, "size": None}


def test_small_vocabulary_in_the_released_format(tmp_path):
    texts = [shapes.caption(*a) for a in shapes.attributes()] + list(shapes.QUESTIONS.values())
    ranks = learn_bpe(texts, 150)
    assert 256 < len(ranks) <= 256 + 150 and sorted(ranks.values()) == list(range(len(ranks)))  # stops when every word is one token
    write_tiktoken_bpe(tmp_path / "bpe.tiktoken", ranks)
    folder = write_tokenizer_folder(tmp_path / "tok", tmp_path / "bpe.tiktoken", codebook_size=64)
    tok = Emu3Tokenizer.from_pretrained(folder)
    # specials start right after the ranks; 3 image specials + 64 visual tokens end the vocabulary
    assert len(tok) == len(ranks) + 205 + 3 + 3 + 64
    assert tok.convert_tokens_to_ids("<|endoftext|>") == len(ranks)
    assert tok.convert_tokens_to_ids("<|visual token 000063|>") == len(tok) - 1
    text = "a large yellow triangle on a black background"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text.split()) * 2


def test_vq_training_loss_reaches_the_encoder_through_the_quantiser():
    import mindspore as ms

    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel
    from train.vq_training import CodebookKeeper, VQTrainingLoss, codebook_usage

    config = Emu3VisionVQConfig(codebook_size=16, ch=32, ch_mult=[1, 1, 1, 1], num_res_blocks=1, attn_resolutions=[])
    model = Emu3VisionVQModel(config)
    model.set_train(True)
    loss = VQTrainingLoss(model)
    pixels = ms.Tensor(np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32))
    keeper = CodebookKeeper(model.quantize.embedding.weight, restart_every=1)
    keeper.initialise(model.encode_latents(pixels.reshape(2, 1, 3, 16, 16), 4))
    params = model.trainable_params()
    (total, (rec, codebook, commitment, codes, latents)), grads = ms.value_and_grad(
        loss, None, params, has_aux=True)(pixels)
    named = {p.name.split("model.", 1)[-1]: g for p, g in zip(params, grads)}  # the loss Cell may prefix names
    assert np.isfinite(float(total)) and float(total) > float(rec) > 0
    # straight-through: the reconstruction reaches the encoder's first conv; the codebook loss reaches the codebook
    assert np.abs(named["encoder.conv_in.weight"].asnumpy()).sum() > 0
    assert np.abs(named["quantize.embedding.weight"].asnumpy()).sum() > 0
    used, _ = codebook_usage(codes.asnumpy(), 16)
    restarted = keeper.observe(codes, latents, step=1)
    assert restarted == round((1 - used) * 16)  # every unused code was moved onto a latent


def test_codebook_upkeep_reaches_a_compiled_train_step():
    """Initialisation and restarts write the codebook in place: the compiled step quantises with the new one."""
    from emu3.tokenizer import Emu3VisionVQConfig, Emu3VisionVQModel
    from train.optim import AdamW
    from train.vq_training import CodebookKeeper, VQTrainingLoss, VQTrainStep

    config = Emu3VisionVQConfig(codebook_size=16, ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[],
                                temporal_downsample_factor=1)
    model = Emu3VisionVQModel(config)
    model.set_train(True)
    step = VQTrainStep(VQTrainingLoss(model), AdamW(model.trainable_params()), compiled=True)
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    _, codes_before, latents, _ = step.step(pixels, 0.0)  # lr 0: the weights, hence the latents, stay
    CodebookKeeper(model.quantize.embedding.weight, seed=1).initialise(latents)
    _, codes, _, _ = step.step(pixels, 0.0)

    rows = latents.asnumpy().transpose(0, 1, 3, 4, 2).reshape(-1, 4)
    table = model.quantize.embedding.weight.asnumpy()
    nearest = ((rows[:, None] - table[None]) ** 2).sum(-1).argmin(-1)
    assert not np.array_equal(codes.asnumpy().reshape(-1), codes_before.asnumpy().reshape(-1))
    np.testing.assert_array_equal(codes.asnumpy().reshape(-1), nearest)
