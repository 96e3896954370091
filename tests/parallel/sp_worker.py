"""Run under msrun (2 workers): sequence parallelism vs one process on the same batch, in the same processes.

    msrun --worker_num=2 ... tests/parallel/sp_worker.py OUT_DIR MODE

Each rank writes OUT_DIR/sp_rank{r}.json with the largest differences it saw (logits, loss, every gradient), with
every decoder layer recomputed (SP without recompute: tests/parallel/test_zero.py).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import emu3  # noqa: E402,F401  (before MindSpore: see emu3/_openmp.py)

import numpy as np  # noqa: E402

import mindspore as ms  # noqa: E402
from mindspore import Tensor  # noqa: E402

from emu3.device import select_device  # noqa: E402
from emu3.mllm import Emu3Config, Emu3ForCausalLM  # noqa: E402
from emu3.parallel.collectives import AllGather, AllReduce, init_distributed  # noqa: E402
from emu3.parallel.sequence_parallel import SequenceParallelCausalLM, split_sequence  # noqa: E402
from train.data import next_token_targets  # noqa: E402
from train.step import token_loss_sum  # noqa: E402

TINY = dict(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            img_token_id=3, boi_token_id=4, eoi_token_id=5, eol_token_id=6, eof_token_id=7, attention_dropout=0.0)


def batch(length=16):
    """Two right-padded samples; supervision starts after a prompt, padding unsupervised."""
    rng = np.random.default_rng(5)
    ids = rng.integers(8, 300, size=(2, length)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 11:] = 0
    ids[1, 11:] = 0
    labels = np.where(mask == 1, ids, -100)
    labels[:, :5] = -100
    return ids, mask, next_token_targets(labels).astype(np.int32)


def loss_and_grads(forward, params, ids, mask, targets):
    def objective(i, m, t):
        _, logits, _ = forward(i, m)
        return token_loss_sum(logits, t), logits

    grad_fn = ms.value_and_grad(objective, None, params, has_aux=True)
    (loss, logits), grads = grad_fn(Tensor(ids), Tensor(mask), Tensor(targets))
    return float(loss.asnumpy()), logits, grads


def compare(world, sp, recompute):
    ms.set_seed(0)
    config = Emu3Config(**TINY)
    plain = Emu3ForCausalLM(config)
    parallel_lm = Emu3ForCausalLM(config)
    ms.load_param_into_net(parallel_lm, {p.name: ms.Parameter(p.data.copy(), p.name)
                                         for p in plain.get_parameters()})
    for model in (plain, parallel_lm):
        model.set_train(True)
        if recompute:
            for layer in model.model.layers:
                layer.recompute()
    ids, mask, targets = batch()
    loss, logits, grads = loss_and_grads(plain, plain.trainable_params(), ids, mask, targets)

    parallel = SequenceParallelCausalLM(parallel_lm, sp)
    local_loss, local_logits, local_grads = loss_and_grads(
        parallel, parallel_lm.trainable_params(), split_sequence(ids, sp), mask, split_sequence(targets, sp))
    total = AllReduce(world)
    gathered_logits = AllGather(sp, dim=1)(local_logits)
    sp_loss = float(total(Tensor(local_loss, ms.float32)).asnumpy())
    diffs = {}
    for p, g, local in zip(plain.trainable_params(), grads, local_grads):
        summed = total(local).asnumpy()
        diffs[p.name] = float(np.abs(summed - g.asnumpy()).max() / (np.abs(g.asnumpy()).max() + 1e-12))
    return {"loss": loss, "sp_loss": sp_loss,
              "logits_diff": float(np.abs(gathered_logits.asnumpy() - logits.asnumpy()).max()),
              "local_shape": list(local_logits.shape), "grad_rel_diff": diffs,
              "grad_names": len(diffs)}


def main(out_dir, mode):
    select_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if mode == 0 else ms.PYNATIVE_MODE)
    world, sp, _ = init_distributed(2)
    result = {"rank": world.rank, "recompute": compare(world, sp, True)}
    with open(os.path.join(out_dir, f"sp_rank{world.rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
