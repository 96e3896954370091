"""The tiny world's pieces: the picture scorer on the world's own pictures, the codes probe and the hand-made codes
that keep shape apart from colour, and a small BPE vocabulary of its own loaded by the same Emu3Tokenizer."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from emu3.mllm import Emu3Tokenizer
from emu3.mllm.tokenizer_files import write_tokenizer_folder
from emu3.mllm.tokenization_emu3 import write_tiktoken_bpe
from train.bpe import learn_bpe
from train.world import checker, oracle, probe, shapes


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


def test_scorer_reads_colour_through_a_greyish_halo_and_in_the_dark():
    # As generated pictures show them: a small red square inside a ring of greyish, low-saturation pixels (more of
    # them than red ones), and a dark yellow disc on black. A median colour read them yellow and green.
    halo = Image.new("RGB", (64, 64), shapes.BACKGROUNDS["white"])
    ImageDraw.Draw(halo).rectangle((21, 21, 34, 34), fill=(185, 190, 160))
    ImageDraw.Draw(halo).rectangle((24, 24, 31, 31), fill=shapes.COLOURS["red"])
    dark = Image.new("RGB", (64, 64), shapes.BACKGROUNDS["black"])
    ImageDraw.Draw(dark).ellipse((20, 20, 39, 39), fill=tuple(int(0.45 * c) for c in shapes.COLOURS["yellow"]))
    assert checker.describe(halo)["colour"] == "red"
    assert checker.describe(dark)["colour"] == "yellow"


def test_scorer_finds_no_shape_on_a_blank_picture():
    blank = np.full((64, 64, 3), 255, np.uint8)
    assert checker.describe(blank) == {"background": "white", "colour": None, "shape": None, "size": None}


def test_captions_parse_back_to_their_attributes():
    for size, colour, shape, background in shapes.attributes():
        assert shapes.parse_caption(shapes.caption(size, colour, shape, background)) == {
            "size": size, "colour": colour, "shape": shape, "background": background}
    for text in ("a large red hexagon on a white background", "a large red circle on a white", "",
                 "a large red circle in a white background"):
        assert shapes.parse_caption(text) is None


def _token_pictures(records, tokens_of, seed):
    """8x8 code grids: code 0 everywhere, the record's tokens on random cells (the shape's place varies)."""
    rng = np.random.default_rng(seed)
    grids = np.zeros((len(records), 8, 8), np.int64)
    for grid, record in zip(grids, records):
        tokens = tokens_of(record)
        grid.reshape(-1)[rng.choice(64, len(tokens), replace=False)] = tokens
    return grids


def _attribute_tokens(record):
    return [1 + list(shapes.SIZES).index(record["size"]), 3 + list(shapes.BACKGROUNDS).index(record["background"])]


def _factorised(record):
    """Tokens that carry colour and shape apart."""
    colour, shape = list(shapes.COLOURS).index(record["colour"]), shapes.SHAPES.index(record["shape"])
    return _attribute_tokens(record) + [5 + colour] * 2 + [9 + shape] * 3


def _entangled(record):
    """Tokens of (colour, shape) pairs; a held-out pair is coded with its colour's first seen shape, as the tiny
    world's tokenizer (trained without it) codes a red triangle with the codes of red circles and squares."""
    shape = record["shape"]
    if shapes.is_held_out(record["colour"], shape):
        shape = next(s for s in shapes.SHAPES if not shapes.is_held_out(record["colour"], s))
    pair = list(shapes.COLOURS).index(record["colour"]) * 3 + shapes.SHAPES.index(shape)
    return _attribute_tokens(record) + [12 + pair] * 3


def test_code_probe_tells_factorised_from_entangled_tokens():
    train = shapes.build_split(0, 3, held_out=False)
    evaluation = shapes.build_split(1, 1, held_out=False) + shapes.build_split(2, 2, held_out=True)
    results = {}
    for name, tokens_of in (("factorised", _factorised), ("entangled", _entangled)):
        results[name] = probe.probe(_token_pictures(train, tokens_of, 0), train,
                                    _token_pictures(evaluation, tokens_of, 1), evaluation, codebook_size=32)
    for name, result in results.items():  # seen pairs: every attribute readable from either kind of token
        assert all(result["probe"]["seen"][a] == 1.0 for a in shapes.ATTRIBUTES), (name, result)
    factorised, entangled = results["factorised"]["probe"]["held_out"], results["entangled"]["probe"]["held_out"]
    assert factorised["shape"] == 1.0 and factorised["colour"] == 1.0, factorised
    assert entangled["shape"] == 0.0 and entangled["colour"] == 1.0, entangled
    assert entangled["count"] == 24
    nearest = results["entangled"]["nearest_training_picture"]["held_out"]
    assert nearest == {"same_colour": 1.0, "same_shape": 0.0}


def _world_pictures():
    rng = np.random.default_rng(0)
    return [shapes.render_record(shapes.sample(rng, *a)) for a in shapes.attributes() for _ in range(2)]


def _fitted_codes(*extra, **fit_options):
    return oracle.HandMadeCodes.fit(_world_pictures() + list(extra), codebook_size=256, **fit_options)


def test_hand_made_codes_write_an_outline_the_same_in_every_colour():
    red = shapes.render("large", "red", "triangle", "white", 8, 12)
    green = shapes.render("large", "green", "triangle", "black", 8, 12)
    codes = _fitted_codes(red)
    r, g = codes.encode(red), codes.encode(green)
    outline = r >= codes.first_pattern
    assert outline.any() and np.array_equal(r[outline], g[outline])  # shape: the same codes whatever the colour
    inside = (r >= codes.first_colour) & ~outline
    assert inside.any() and set(r[inside]) == {codes.colour_code("red")} and \
        set(g[inside]) == {codes.colour_code("green")}  # colour: only in fully covered cells
    assert set(r[~(outline | inside)]) == {codes.background_code("white", "red")}
    assert set(g[~(outline | inside)]) == {codes.background_code("black", "green")}
    assert codes.background_code("white", "red") == codes.background_code("white", "green")
    # The codes hold the whole picture: decoded, it is the same pixels.
    assert np.array_equal(np.asarray(codes.decode(r)), np.asarray(red))
    assert np.array_equal(np.asarray(codes.decode(g)), np.asarray(green))


def test_hand_made_codes_with_colour_in_outlines_tie_the_outline_to_its_colour():
    red = shapes.render("large", "red", "triangle", "white", 8, 12)
    green = shapes.render("large", "green", "triangle", "white", 8, 12)
    codes = _fitted_codes(red, outline_colour=True)
    assert len(codes.patterns) == (256 - codes.first_pattern) // 4 and codes.size <= 256
    r, g = codes.encode(red), codes.encode(green)
    outline = r >= codes.first_pattern
    assert outline.any() and not (set(r[outline]) & set(g[outline]))  # the same outline, other codes
    assert np.array_equal(np.asarray(codes.decode(r)), np.asarray(red))
    with pytest.raises(ValueError, match="hold 1 to 62 patterns"):
        _fitted_codes(outline_colour=True, patterns=63)


def test_hand_made_codes_with_colour_in_backgrounds_share_outlines_and_colour_every_empty_cell():
    red = shapes.render("small", "red", "triangle", "white", 8, 12)
    green = shapes.render("small", "green", "triangle", "white", 8, 12)
    codes = _fitted_codes(red, background_colour=True)
    assert codes.first_pattern == 2 * 4 + 4 and codes.size <= 256  # 8 backgrounds, 4 colours, then the patterns
    with pytest.raises(ValueError, match="hold 1 to 244 patterns"):
        _fitted_codes(background_colour=True, patterns=245)
    r, g = codes.encode(red), codes.encode(green)
    outline = r >= codes.first_pattern
    assert outline.any() and np.array_equal(r[outline], g[outline])  # shape still shared
    empty = r < codes.first_colour
    assert set(r[empty]) == {codes.background_code("white", "red")}
    assert set(g[empty]) == {codes.background_code("white", "green")}
    assert codes.background_code("white", "red") != codes.background_code("white", "green")
    # A small shape may cover no cell fully: its colour comes back from the empty cells.
    for picture, grid in ((red, r), (green, g)):
        assert np.array_equal(np.asarray(codes.decode(grid)), np.asarray(picture))


def test_hand_made_codes_decode_any_grid_the_scorer_can_read():
    codes = _fitted_codes()
    rng = np.random.default_rng(3)
    grid = rng.integers(0, 256, (8, 8))  # codes the fit never made count as background
    assert np.asarray(codes.decode(grid)).shape == (64, 64, 3)
    record = shapes.sample(rng, "large", "blue", "square", "white")
    picture = shapes.render_record(record)
    assert all(checker.score(codes.decode(codes.encode(picture)), record).values())


def test_hand_made_processor_puts_its_codes_in_prompts_and_pictures(tmp_path):
    ranks = learn_bpe([shapes.caption(*a) for a in shapes.attributes()] + list(shapes.QUESTIONS.values()), 100)
    write_tiktoken_bpe(tmp_path / "bpe.tiktoken", ranks)
    tok = Emu3Tokenizer.from_pretrained(write_tokenizer_folder(tmp_path / "tok", tmp_path / "bpe.tiktoken", 256),
                                        padding_side="left")
    picture = shapes.render("small", "yellow", "circle", "black", 20, 24)
    codes = _fitted_codes(picture)
    processor = oracle.hand_made_processor(codes, tok)
    ids = processor(shapes.QUESTIONS["shape"], picture, mode="U", return_tensors="np")["input_ids"][0].tolist()
    first = tok.convert_tokens_to_ids("<|visual token 000000|>")
    assert [i - first for i in ids if i >= first] == codes.encode(picture).reshape(-1).tolist()
    (drawn,) = processor.decode_grids([codes.encode(picture)])
    assert np.array_equal(np.asarray(drawn), np.asarray(picture))
    # Drawing is constrained to the tokenizer's 256 visual tokens (not the released 32,768: no vision tokenizer here).
    constraint = processor.build_prefix_constrained_fn(np.array([8]), np.array([8]))
    assert constraint.visual_tokens.reshape(-1).tolist() == list(range(first, len(tok)))


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
    (total, (rec, codebook, commitment, codes, latents, adversarial, perceptual, _)), grads = ms.value_and_grad(
        loss, None, params, has_aux=True)(pixels)
    named = {p.name.split("model.", 1)[-1]: g for p, g in zip(params, grads)}  # the loss Cell may prefix names
    assert np.isfinite(float(total)) and float(total) > float(rec) > 0 and float(adversarial) == float(perceptual) == 0
    # straight-through: the reconstruction reaches the encoder's first conv; the codebook loss reaches the codebook
    assert np.abs(named["encoder.conv_in.weight"].asnumpy()).sum() > 0
    assert np.abs(named["quantize.embedding.weight"].asnumpy()).sum() > 0
    used, _ = codebook_usage(codes.asnumpy(), 16)
    restarted = keeper.observe(codes, latents, step=1)
    assert restarted == round((1 - used) * 16)  # every unused code was moved onto a latent


def test_kmeans_plus_plus_seeding_draws_away_from_what_is_covered():
    from train.vq_training import CodebookKeeper, kmeans_plus_plus

    rng = np.random.default_rng(0)
    background = np.zeros((900, 8))  # a mostly-background batch: one latent repeated
    shapes_ = rng.normal(3.0, 1.0, (100, 8))
    rows = np.concatenate([background, shapes_])
    picked = kmeans_plus_plus(rows, 50, np.random.default_rng(1))
    # Once one background latent is drawn, its copies are at distance 0: at most one draw of the 900 (uniform
    # draws would take ~45 of the 50 there).
    assert (np.abs(picked).sum(axis=1) == 0).sum() <= 1
    # With codes already covering the background, none is drawn there.
    picked = kmeans_plus_plus(rows, 20, np.random.default_rng(2), centres=np.zeros((1, 8)))
    assert (np.abs(picked).sum(axis=1) > 0).all()
    # Nothing to tell apart: uniform draws, no division by zero.
    assert np.isfinite(kmeans_plus_plus(np.ones((5, 8)), 3, np.random.default_rng(3))).all()
    with pytest.raises(ValueError, match="seeding"):
        CodebookKeeper(None, seeding="farthest")


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
    _, codes_before, latents, _, _ = step.step(pixels, 0.0)  # lr 0: the weights, hence the latents, stay
    CodebookKeeper(model.quantize.embedding.weight, seed=1).initialise(latents)
    _, codes, _, _, _ = step.step(pixels, 0.0)

    rows = latents.asnumpy().transpose(0, 1, 3, 4, 2).reshape(-1, 4)
    table = model.quantize.embedding.weight.asnumpy()
    nearest = ((rows[:, None] - table[None]) ** 2).sum(-1).argmin(-1)
    assert not np.array_equal(codes.asnumpy().reshape(-1), codes_before.asnumpy().reshape(-1))
    np.testing.assert_array_equal(codes.asnumpy().reshape(-1), nearest)
