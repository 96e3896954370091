"""Measures a trained tiny world through the public API, as a user would call it: reconstruction by the vision
tokenizer, text-to-image with classifier-free guidance and the prefix constraint, and question answering.

Generated and reconstructed pictures are scored by ``checker`` (what is drawn, read back from the pixels), answers
by exact match with the one-word truth; every score is split into pictures of combinations seen in training and
the held-out ones.
"""

import collections
import math

import numpy as np

from train.image_folder import to_uint8

from . import checker, shapes


def load_models(llm_dir, vq_dir):
    """(LLM, processor) from the released-layout folders the tiny world writes."""
    from emu3.mllm import Emu3ForCausalLM, Emu3Processor, Emu3Tokenizer
    from emu3.tokenizer import Emu3VisionVQImageProcessor, Emu3VisionVQModel

    model = Emu3ForCausalLM.from_pretrained(llm_dir)
    processor = Emu3Processor(Emu3VisionVQImageProcessor.from_pretrained(vq_dir),
                              Emu3VisionVQModel.from_pretrained(vq_dir),
                              Emu3Tokenizer.from_pretrained(llm_dir, padding_side="left"), model_config=model.config)
    return model, processor


def _held_out(record):
    return shapes.is_held_out(record["colour"], record["shape"])


def _split(pairs):
    """(record, value) pairs -> {"seen": [values], "held_out": [values]} by the record's combination."""
    out = {"seen": [], "held_out": []}
    for record, value in pairs:
        out["held_out" if _held_out(record) else "seen"].append(value)
    return out


def _attribute_accuracy(scores):
    """scores: list of {attribute: bool} -> {attribute: accuracy, "all": fraction with every attribute right}."""
    if not scores:
        return {}
    acc = {k: float(np.mean([s[k] for s in scores])) for k in shapes.ATTRIBUTES}
    acc["all"] = float(np.mean([all(s.values()) for s in scores]))
    acc["count"] = len(scores)
    return acc


def reconstruct(processor, pictures, batch_size=16):
    """(code grids (N, 8, 8), uint8 reconstructions (N, 64, 64, 3)) of uint8 pictures through encode -> decode."""
    import mindspore as ms

    vq = processor.vision_tokenizer
    grids, recons = [], []
    for start in range(0, len(pictures), batch_size):
        pixels = np.stack(pictures[start:start + batch_size]).astype(np.float32).transpose(0, 3, 1, 2) / 127.5 - 1
        codes = vq.encode(ms.Tensor(pixels))
        grids.extend(codes.asnumpy().reshape(len(pixels), *codes.shape[-2:]))
        recons.extend(to_uint8(image) for image in vq.decode(codes).asnumpy())
    return grids, recons


def evaluate_reconstruction(processor, records):
    """(metrics, pictures, code grids, reconstructions) of the records' pictures."""
    from emu3 import metrics

    pictures = [np.asarray(shapes.render_record(r)) for r in records]
    grids, recons = reconstruct(processor, pictures)
    scores = [checker.score(img, r) for img, r in zip(recons, records)]
    return {"psnr": float(np.mean([metrics.psnr(p, q) for p, q in zip(pictures, recons)])),
            "ssim": float(np.mean([metrics.ssim(p, q) for p, q in zip(pictures, recons)])),
            "checker": _attribute_accuracy(scores)}, pictures, grids, recons


# Sampling among the 8 likeliest of the world's 256 codes (the released Emu3 samples among 2048 of 32,768): a small
# model's tail of unlikely codes draws stray colours and blobs (README, "The tiny world").
TOP_K = 8


def generate_images(model, processor, captions, guidance_scale=3.0, top_k=TOP_K, seed=0, batch_size=24):
    """One picture per caption (PIL, or None when the output held no image), CFG against the null prompt ""."""
    from emu3.mllm.utils_emu3 import image_generation_kwargs

    images = []
    # Batches as even as possible (84 captions: 4 x 21, not 3 x 24 + 12): one generation graph compiled, not two.
    batch_size = math.ceil(len(captions) / math.ceil(len(captions) / batch_size)) if captions else batch_size
    for start in range(0, len(captions), batch_size):
        batch = captions[start:start + batch_size]
        pos, neg = processor.build_generation_inputs(batch, "", image_area=model.config.image_area,
                                                     padding="longest", return_tensors="np")
        outputs = model.generate(pos["input_ids"], do_sample=True, top_k=top_k, seed=seed + start,
                                 **image_generation_kwargs(model, processor, pos, neg, guidance_scale))
        for chunks in processor.batch_decode(outputs.asnumpy()):
            chunks = chunks if isinstance(chunks, list) else [chunks]
            pictures = [c for c in chunks if not isinstance(c, str)]
            images.append(pictures[0].convert("RGB") if pictures else None)
    return images


# Held-out captions (the goals; 12 of them) are drawn this many times each, seen ones (36) once: one picture per
# held-out caption moved a score by 8 points, and two runs differing only in data order differed by up to 33.
HELD_OUT_DRAWS = 4


def evaluate_generation(model, processor, records, held_out_draws=HELD_OUT_DRAWS, **kwargs):
    """Every caption of ``records`` drawn (held-out ones ``held_out_draws`` times, each with its own sample), every
    picture scored against the caption's attributes -> ({split: accuracies over pictures}, [(caption, image,
    score)])."""
    by_caption = {r["caption"]: r for r in records}
    captions = [c for c in sorted(by_caption) for _ in range(held_out_draws if _held_out(by_caption[c]) else 1)]
    images = generate_images(model, processor, captions, **kwargs)
    missing = {a: False for a in shapes.ATTRIBUTES}
    scored = [(c, img, checker.score(img, by_caption[c]) if img is not None else dict(missing))
              for c, img in zip(captions, images)]
    per = _split((by_caption[c], s) for c, _, s in scored)
    return {split: _attribute_accuracy(scores) for split, scores in per.items()}, scored


def answer_questions(model, processor, records, batch_size=32):
    """{(record name, question key): answer} by greedy decoding."""
    asked = [(r, key) for r in records for key in shapes.QUESTIONS]
    answers = {}
    for start in range(0, len(asked), batch_size):
        batch = asked[start:start + batch_size]
        pictures = {r["name"]: shapes.render_record(r) for r, _ in batch}  # one object per picture: encoded once
        images = [pictures[r["name"]] for r, _ in batch]
        inputs = processor([shapes.QUESTIONS[k] for _, k in batch], images, mode="U", padding_image=True,
                           padding="longest", return_tensors="np")
        length = inputs["input_ids"].shape[1]
        outputs = model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"], max_new_tokens=4,
                                 do_sample=False)
        texts = processor.batch_decode(outputs.asnumpy()[:, length:], skip_special_tokens=True)
        for (r, key), text in zip(batch, texts):
            text = text if isinstance(text, str) else "".join(x for x in text if isinstance(x, str))
            answers[(r["name"], key)] = text.strip()
    return answers


def evaluate_answers(model, processor, records):
    answers = answer_questions(model, processor, records)
    results = {}
    for split, rows in _split((r, r) for r in records).items():
        correct = collections.defaultdict(list)
        for r in rows:
            for key in shapes.QUESTIONS:
                correct[key].append(answers[(r["name"], key)].lower() == shapes.answers(r)[key])
        if rows:
            results[split] = {k: float(np.mean(v)) for k, v in correct.items()}
            results[split]["all"] = float(np.mean([x for v in correct.values() for x in v]))
            results[split]["count"] = len(rows) * len(shapes.QUESTIONS)
    return results, answers

