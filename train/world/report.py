"""The tiny world's evaluation outputs: ``metrics.json`` and a self-contained ``report.html`` (pictures inline)."""

import base64
import html
import io
import os

import numpy as np
from PIL import Image

from emu3.atomic import atomic_write, atomic_write_json

from train.trainer import evaluation_curves, final_evaluation_losses, read_log

from . import dataset, evaluate, probe, shapes

SHOWN_RECONSTRUCTIONS = 8


def _png(image, scale=2):
    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(image, title="", scale=2):
    return f'<img src="{_png(image, scale)}" title="{html.escape(title)}">'


def _points(records, key):
    return [(r["step"], r[key]) for r in records if r.get(key) is not None]


def _loss_figure(vq_log, llm_log, evaluated):
    """The training losses, and the LLM's evaluation curves (``evaluation_curves``) when it was evaluated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [({key: _points(vq_log, key) for key in ("loss", "reconstruction")}, "vision tokenizer"),
              ({"loss": _points(llm_log, "loss")}, "Emu3 LLM (T2I + VQA)")]
    if evaluated:
        panels.append((evaluated, "Emu3 LLM on the evaluation pictures"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.2))
    for ax, (curves, title) in zip(axes, panels):
        colours = {}  # a set's seen and held-out curves share a colour: solid seen, dashed held-out
        for key, points in curves.items():
            if points:
                held_out = key.endswith("_held_out")
                base = key[:-len("_held_out")] if held_out else key[:-len("_seen")] if key.endswith("_seen") else key
                colour = colours.setdefault(base, f"C{len(colours)}")
                ax.plot(*zip(*points), label=key, color=colour, linestyle="--" if held_out else "-",
                        marker="o" if len(points) < 10 else None)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return Image.open(io.BytesIO(buffer.getvalue()))


def _percent(value):
    return "–" if value is None else f"{100 * value:.0f}%"


def _accuracy_table(results, columns):
    rows = "".join(f"<tr><th>{split.replace('_', '-')}</th>"
                   + "".join(f"<td>{_percent(results[split].get(c))}</td>" for c in columns)
                   + f"<td>{results[split].get('count', 0)}</td></tr>" for split in ("seen", "held_out")
                   if results.get(split))
    return ("<table><tr><th></th>" + "".join(f"<th>{c}</th>" for c in columns) + "<th>n</th></tr>" + rows
            + "</table>")


def evaluate_and_report(out, timings, seed):
    """Evaluate the trained world in ``out`` and write ``out/metrics.json`` and ``out/report.html``."""
    records = dataset.load(os.path.join(out, "data", "eval.json"))
    model, processor = evaluate.load_models(os.path.join(out, "Emu3-Tiny"), os.path.join(out, "Emu3-VisionTokenizer"))
    print(f"  reconstructing {len(records)} evaluation pictures", flush=True)
    recon, pictures, grids, recons = evaluate.evaluate_reconstruction(processor, records)
    train_grids, train_records = probe.training_codes(os.path.join(out, "prepared", "t2i"))
    codes = probe.probe(train_grids, train_records, np.stack(grids), records,
                        processor.vision_tokenizer.config.codebook_size)
    print(f"  drawing {len({r['caption'] for r in records})} captions, the held-out ones {evaluate.HELD_OUT_DRAWS} "
          f"times (CFG 3.0 against the null prompt, top-k {evaluate.TOP_K})", flush=True)
    generation, drawn = evaluate.evaluate_generation(model, processor, records, seed=seed)
    print(f"  answering {len(records) * len(shapes.QUESTIONS)} questions", flush=True)
    vqa, answers = evaluate.evaluate_answers(model, processor, records)

    vq_log = read_log(os.path.join(out, "runs", "vision-tokenizer"))
    llm_log = read_log(os.path.join(out, "runs", "llm"))
    metrics = {
        "vision_tokenizer": dict(recon, training_steps=vq_log[-1]["step"] if vq_log else None),
        "text_to_image": generation,
        "vqa": vqa,
        "codes": codes,
        "llm": {"training_steps": llm_log[-1]["step"] if llm_log else None,
                "final_loss": next((r["loss"] for r in reversed(llm_log) if "loss" in r), None),
                "eval_loss": final_evaluation_losses(llm_log)},
        "stage_seconds": timings,
    }
    atomic_write_json(os.path.join(out, "metrics.json"), metrics, indent=2)

    columns = list(shapes.ATTRIBUTES) + ["all"]
    gen_rows = "".join(
        f"<tr><td>{html.escape(caption)}{' <b>(held out)</b>' if shapes.is_held_out(*caption.split()[2:4]) else ''}"
        f"</td><td>{_img(image, caption) if image is not None else 'no image'}</td>"
        f"<td>{', '.join(k for k, ok in score.items() if not ok) or 'all right'}</td></tr>"
        for caption, image, score in drawn)
    rec_cells = "".join(f"<td>{_img(p)}<br>{_img(r)}</td>" for p, r in
                        zip(pictures[:SHOWN_RECONSTRUCTIONS], recons[:SHOWN_RECONSTRUCTIONS]))
    qa_rows = "".join(f"<tr><td>{_img(p)}</td>" + "".join(_answer_cell(r, k, answers) for k in shapes.QUESTIONS)
                      + "</tr>" for r, p in _examples_for_questions(records, pictures))
    timing_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.0f} s</td></tr>" for k, v in timings.items())
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Emu3 tiny world</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}} img{{image-rendering:pixelated}}
table{{border-collapse:collapse;margin:0.5em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:center}}</style>
</head><body><h1>Emu3 tiny world</h1>
<p>A vision tokenizer and an Emu3 LLM trained from scratch on this machine on pictures of one shape on a plain
background. Held-out colour &times; shape pairs ({', '.join(f'{c} {s}' for c, s in shapes.HELD_OUT)}) never appear in
training. Pictures are scored by reading back colour, shape, size and background from the pixels.</p>
<h2>Losses</h2>{_img(_loss_figure(vq_log, llm_log, evaluation_curves(llm_log)), 'training losses', scale=1)}
{_evaluation_note(metrics["llm"]["eval_loss"])}
<h2>Vision tokenizer: reconstructions</h2>
<p>PSNR {recon['psnr']:.2f} dB, SSIM {recon['ssim']:.3f} on {len(records)} evaluation pictures; the scorer reads
every attribute right on {_percent(recon['checker']['all'])} of the reconstructions. Originals above, reconstructions
below.</p>
<table><tr>{rec_cells}</tr></table>
<h2>Text to image</h2>{_accuracy_table(generation, columns)}
<table><tr><th>caption</th><th>generated</th><th>wrong attributes</th></tr>{gen_rows}</table>
<h2>Questions</h2>{_accuracy_table(vqa, list(shapes.QUESTIONS) + ['all'])}
<table>{qa_rows}</table>
<h2>What the tokens tell, without the LLM</h2>
<p>A linear probe (softmax regression on the bag of codes of a picture) trained on the codes of the training
pictures, scored on the evaluation pictures; and, for each evaluation picture, whether the training picture sharing
the most codes with it has the same colour and the same shape. Probe accuracy that stays high on held-out pairs means
the codes carry that attribute apart from the others; where it falls, the tokens of a held-out pair look like other
pairs' tokens, and what is learned from the training pairs does not carry over to it.</p>
{_accuracy_table(codes["probe"], list(shapes.ATTRIBUTES))}
<table><tr><th></th><th>nearest training picture: same colour</th><th>same shape</th></tr>{_nearest_rows(codes)}</table>
<h2>Time per stage</h2><table>{timing_rows}</table>
</body></html>
"""
    atomic_write(os.path.join(out, "report.html"), page)
    print(f"  text-to-image, every attribute right: seen {_percent(generation.get('seen', {}).get('all'))}, "
          f"held-out {_percent(generation.get('held_out', {}).get('all'))}; questions right: seen "
          f"{_percent(vqa.get('seen', {}).get('all'))}, held-out {_percent(vqa.get('held_out', {}).get('all'))}",
          flush=True)
    losses = metrics["llm"]["eval_loss"]
    if "t2i_seen" in losses and "t2i_held_out" in losses:
        print(f"  the LLM's loss on the evaluation pictures' visual tokens: seen {losses['t2i_seen']:.3f}, held-out "
              f"{losses['t2i_held_out']:.3f}", flush=True)
    print(f"  shape read from the codes alone (linear probe): seen {_percent(codes['probe']['seen']['shape'])}, "
          f"held-out {_percent(codes['probe'].get('held_out', {}).get('shape'))}", flush=True)
    return metrics


def _evaluation_note(losses):
    if not losses:
        return ""
    rows = "".join(f"<tr><th>{task}</th>" + "".join(f"<td>{losses[f'{task}_{split}']:.3f}</td>"
                                                    if f"{task}_{split}" in losses else "<td>–</td>"
                                                    for split in ("seen", "held_out")) + "</tr>"
                   for task in ("t2i", "vqa", "vqa_shape"))
    return ("<p>The LLM's loss on the evaluation pictures while it trained (right; the training loss's tokens: "
            "visual tokens of a caption's picture for t2i, the answer for vqa; vqa_shape is the shape question "
            "alone). Where the held-out curves stay above the seen ones, what is learned about the seen pairs does "
            "not carry to the held-out ones.</p><table><tr><th>final loss</th><th>seen</th><th>held-out</th></tr>"
            + rows + "</table>")


def _nearest_rows(codes):
    return "".join(f"<tr><th>{split.replace('_', '-')}</th><td>{_percent(rates['same_colour'])}</td>"
                   f"<td>{_percent(rates['same_shape'])}</td></tr>"
                   for split, rates in codes["nearest_training_picture"].items())


def _answer_cell(record, key, answers):
    answer, truth = answers[(record["name"], key)], shapes.answers(record)[key]
    verdict = "" if answer.lower() == truth else f" ✗ ({truth})"
    return f"<td>{html.escape(shapes.QUESTIONS[key])}<br><b>{html.escape(answer)}</b>{verdict}</td>"


def _examples_for_questions(records, pictures, per_split=4):
    """A few pictures of each split, with their records."""
    seen = [(r, p) for r, p in zip(records, pictures) if not r["held_out"]][:per_split]
    held = [(r, p) for r, p in zip(records, pictures) if r["held_out"]][:per_split]
    return seen + held
