"""Run under msrun (2 workers): three optimizer steps with ZeRO stages 0-3 and with sequence parallelism, each
compared with one process training on the same global batches (computed in the same processes).

    msrun --worker_num=2 ... tests/parallel/zero_worker.py OUT_DIR MODE (0 graph, 1 pynative)

Each rank writes OUT_DIR/zero_rank{r}.json: per variant, the largest relative parameter difference after three
steps, the losses and gradient norms of both runs, and how many elements of parameters + optimizer state this
rank holds.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import emu3  # noqa: E402,F401  (before MindSpore: see emu3/_openmp.py)

import numpy as np  # noqa: E402

import mindspore as ms  # noqa: E402
from mindspore import Parameter  # noqa: E402

from emu3.device import select_device  # noqa: E402
from emu3.mllm import Emu3Config, Emu3ForCausalLM  # noqa: E402
from emu3.parallel.collectives import init_distributed  # noqa: E402
from emu3.parallel.sequence_parallel import SequenceParallelCausalLM, split_sequence  # noqa: E402
from emu3.parallel.zero import ZeroPlan, shard_parameters  # noqa: E402
from train.data import next_token_targets  # noqa: E402
from train.optim import AdamW  # noqa: E402
from train.step import TrainStep  # noqa: E402

TINY = dict(vocab_size=301, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            img_token_id=3, boi_token_id=4, eoi_token_id=5, eol_token_id=6, eof_token_id=7, attention_dropout=0.0)
STEPS, GLOBAL_BATCH, LENGTH = 3, 4, 16
# (name, ZeRO stage, SP size, micro-batches accumulated per step, recompute)
VARIANTS = [("dp", 0, 1, 1, False), ("zero1", 1, 1, 1, False), ("zero2_accumulate", 2, 1, 2, False),
            ("zero3", 3, 1, 1, False), ("zero3_recompute", 3, 1, 1, True), ("sp2", 0, 2, 1, False),
            ("sp2_zero3", 3, 2, 1, True)]


def global_batches():
    rng = np.random.default_rng(11)
    out = []
    for _ in range(STEPS):
        ids = rng.integers(8, 301, size=(GLOBAL_BATCH, LENGTH)).astype(np.int32)
        mask = np.ones_like(ids)
        for row in range(GLOBAL_BATCH):
            end = int(rng.integers(9, LENGTH + 1))
            mask[row, end:] = 0
            ids[row, end:] = 0
        labels = np.where(mask == 1, ids, -100)
        labels[:, :4] = -100
        out.append((ids, mask, next_token_targets(labels).astype(np.int32)))
    return out


def build(config, weights):
    model = Emu3ForCausalLM(config)
    ms.load_param_into_net(model, {k: Parameter(ms.Tensor(v), k) for k, v in weights.items()})
    model.set_train(True)
    return model


def recompute_layers(model):
    for layer in model.model.layers:
        layer.recompute()


def train(model, plan, forward, micro_batches_per_step):
    optimizer = AdamW(plan.optimizer_params(), weight_decay=0.1, betas=(0.9, 0.95), eps=1e-6)
    step = TrainStep(model, optimizer, max_grad_norm=0.5, compiled=ms.get_context("mode") == ms.GRAPH_MODE, guard_overflow=False, plan=plan,
                     forward=forward)
    losses, norms = [], []
    for micro in micro_batches_per_step:
        loss, norm, _, _ = step.step(micro, 1e-2)
        losses.append(loss)
        norms.append(norm)
    held = sum(p.size for p in model.trainable_params()) + sum(
        t.size for t in optimizer.state().values()) + sum(m.size for m in plan.masters)
    return losses, norms, held


def main(out_dir, mode):
    select_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if mode == 0 else ms.PYNATIVE_MODE)
    world, _, _ = init_distributed(1)
    config = Emu3Config(**TINY)
    ms.set_seed(0)
    weights = {p.name: p.asnumpy() for p in Emu3ForCausalLM(config).get_parameters()}
    batches = global_batches()

    reference = build(config, weights)
    ref_losses, ref_norms, ref_held = train(reference, ZeroPlan(reference), None, [[b] for b in batches])
    expected = {p.name: p.asnumpy() for p in reference.get_parameters()}

    results = {"rank": world.rank, "reference": {"losses": ref_losses, "norms": ref_norms, "held": ref_held}}
    only = os.environ.get("VARIANTS")
    for name, stage, sp_size, accumulate, recompute in VARIANTS:
        if only and name not in only.split(","):
            continue
        _, sp, dp = init_distributed(sp_size)
        model = build(config, weights)
        sharded = shard_parameters(model, world, regather=not recompute) if stage == 3 else None
        if recompute:  # after the parallel transforms, as the trainer applies it
            recompute_layers(model)
        plan = ZeroPlan(model, world, stage, sharded)
        forward = SequenceParallelCausalLM(model, sp) if sp_size > 1 else None
        per_step = []
        for ids, mask, targets in batches:
            rows = slice(dp.rank * GLOBAL_BATCH // dp.size, (dp.rank + 1) * GLOBAL_BATCH // dp.size)
            ids, mask, targets = ids[rows], mask[rows], targets[rows]
            if sp_size > 1:
                ids, targets = split_sequence(ids, sp), split_sequence(targets, sp)
            n = len(ids) // accumulate
            per_step.append([(ids[i * n:(i + 1) * n], mask[i * n:(i + 1) * n], targets[i * n:(i + 1) * n])
                             for i in range(accumulate)])
        losses, norms, held = train(model, plan, forward, per_step)
        worst, worst_name = 0.0, None
        for pname, param in model.parameters_and_names():
            value = plan.full_value(pname, param)
            ref = expected[pname]
            diff = float(np.abs(value - ref).max() / (np.abs(ref).max() + 1e-12))
            if diff > worst:
                worst, worst_name = diff, pname
        results[name] = {"param_rel_diff": worst, "worst": worst_name, "losses": losses, "norms": norms,
                         "held": held}
    with open(os.path.join(out_dir, f"zero_rank{world.rank}.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
