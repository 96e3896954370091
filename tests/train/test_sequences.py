"""Training sequences are exactly the original's (docs §6.1/§6.3), and only the intended tokens are supervised.

The expected ids come from tokenising the whole sequence *string*, written out as the original builds it; the
builder assembles ids piece by piece, so these tests also check that both agree.
"""

import numpy as np
import pytest

from emu3.mllm.special_tokens import VISUAL_TOKEN_OFFSET
from train.sequences import IGNORE_INDEX, SequenceBuilder, supervision_from_flags
from train.shards import make_record

BOS, EOS, PAD = "<|extra_203|>", "<|extra_204|>", "<|endoftext|>"
BOI, EOI, IMG, EOL, EOF = "<|image start|>", "<|image end|>", "<|image token|>", "<|extra_200|>", "<|extra_201|>"
GRID = np.array([[0, 5, 32767], [7, 7, 1]])


def vtok(k):
    return f"<|visual token {k:06d}|>"


def image_string(grid):
    rows = EOL.join("".join(vtok(k) for k in row) for row in grid)
    return f"{BOI}{grid.shape[0]}*{grid.shape[1]}{IMG}{rows}{EOL}{EOF}{EOI}"


def test_t2i_sequence_and_labels_are_the_originals(tokenizer):
    caption = "a red square <|image start|> with 12 sides"  # special-token text inside a caption is allowed
    ids, labels = SequenceBuilder(tokenizer, "vision").t2i(caption, GRID)
    assert ids == tokenizer.encode(BOS + caption + image_string(GRID))  # no eos, as the original
    visual = [i for i in ids if i >= VISUAL_TOKEN_OFFSET]
    assert [x for x in labels if x != IGNORE_INDEX] == visual and len(visual) == GRID.size
    assert all(l == i for l, i in zip(labels, ids) if l != IGNORE_INDEX)


def test_vqa_sequence_is_the_processor_prompt_then_the_answer(tokenizer):
    from emu3.mllm.processing_emu3 import Emu3Processor

    question, answer = "What colour is the shape?", "red"
    ids, labels = SequenceBuilder(tokenizer, "response").chat(question, answer, GRID)
    prompt = Emu3Processor(tokenizer=tokenizer).image_prompt(GRID)
    expected_prompt = BOS + f"You are a helpful assistant. USER: {prompt}{question}. ASSISTANT:"
    assert prompt == image_string(GRID)
    assert ids == tokenizer.encode(expected_prompt) + tokenizer.encode(answer) + [tokenizer.eos_token_id]
    supervised = [l for l in labels if l != IGNORE_INDEX]
    assert supervised == tokenizer.encode(answer) + [tokenizer.eos_token_id], "the response and eos only"
    assert labels[-len(supervised):] == supervised


def test_text_only_sample_has_no_image_block(tokenizer):
    ids, labels = SequenceBuilder(tokenizer, "response").chat("What is 2 plus 2?", "4")
    assert ids == tokenizer.encode(BOS + "You are a helpful assistant. USER: What is 2 plus 2?. ASSISTANT:4" + EOS)
    assert [l for l in labels if l != IGNORE_INDEX] == tokenizer.encode("4" + EOS)


@pytest.mark.parametrize("task", ["t2i", "vqa", "text"])
def test_length_pass_agrees_with_the_built_sequence(tokenizer, task):
    builder = SequenceBuilder(tokenizer, "vision" if task == "t2i" else "response")
    record = make_record("x", task, "What colour 3 is it?", "" if task == "t2i" else "red, 42",
                         None if task == "text" else GRID)
    assert builder.length(record) == len(builder.build(record)[0])


def test_padding_is_right_and_never_supervised(tokenizer):
    builder = SequenceBuilder(tokenizer, "all")
    ids, labels = builder.t2i("a cat", GRID)
    input_ids, mask, padded_labels = builder.padded(ids, labels, len(ids) + 5)
    assert mask.tolist() == [1] * len(ids) + [0] * 5
    assert input_ids[len(ids):].tolist() == [tokenizer.pad_token_id] * 5
    assert padded_labels[:len(ids)].tolist() == ids, "'all' supervises every real token"
    assert (padded_labels[len(ids):] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="longer than max_length"):
        builder.padded(ids, labels, len(ids) - 1)


def test_null_prompt_empties_the_caption(tokenizer):
    builder = SequenceBuilder(tokenizer, "vision")
    record = make_record("x", "t2i", "a blue circle", "", GRID)
    assert builder.build(record, null_prompt=True)[0] == tokenizer.encode(BOS + image_string(GRID))


def test_supervision_flags_and_task_mismatches(tokenizer):
    assert supervision_from_flags(True, False) == "vision"
    assert supervision_from_flags(False, True) == "response"
    assert supervision_from_flags(False, False) == "all"
    assert supervision_from_flags(True, True) == "task"
    with pytest.raises(ValueError, match="apply_loss_on_only_text True"):
        SequenceBuilder(tokenizer, "vision").chat("q", "a", GRID)
    with pytest.raises(ValueError, match="apply_loss_on_only_vision True"):
        SequenceBuilder(tokenizer, "response").t2i("c", GRID)


def test_task_supervision_gives_each_sample_its_own_target(tokenizer):
    """Both flags True (mixed T2I + VQA data): a T2I sample as with "vision", a VQA sample as with "response"."""
    task = SequenceBuilder(tokenizer, "task")
    assert task.t2i("a red square", GRID) == SequenceBuilder(tokenizer, "vision").t2i("a red square", GRID)
    question, answer = "What colour is the shape?", "red"
    assert task.chat(question, answer, GRID) == SequenceBuilder(tokenizer, "response").chat(question, answer, GRID)
    for name in ("t2i", "vqa"):
        task.check_task(name)  # neither task is refused
