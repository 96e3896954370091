"""The trainer: build -> compiled train step -> log -> evaluate -> save/resume. One trainer for every task.

Build order: process groups (under msrun), tokenizer and config of ``--model_name_or_path`` (config cross-updated
with ``--image_area`` / ``--max_position_embeddings`` as the original), dataset (each data-parallel rank its own
part; the ranks of one sequence-parallel group read the same samples), model (pretrained weights, or a resumed
checkpoint's), then what is applied from outside the plain model (``train.parallelize``): frozen layers,
precision, sequence parallelism, ZeRO-3 sharding, recompute; then the optimizer over what the ZeRO plan says.
A single process is the world of one: the same code with every collective left out.
"""

import itertools
import json
import math
import os
import time

import mindspore as ms

from emu3.atomic import atomic_path, atomic_write, atomic_write_json
from emu3.device import select_device
from emu3.mllm import Emu3ForCausalLM
from emu3.nn.precision import PrecisionPolicy, apply_precision
from emu3.parallel.sequence_parallel import split_sequence
from emu3.parallel.zero import shard_rows

from .arguments import eval_sets
from .checkpointing import (PARAM_PREFIX, ModelExport, Ranks, check_resumable, check_same_layout, checkpoints,
                            copy_model_files, load_resume_state, process_layout, rank_file, read_tensors,
                            read_tensors_from, remove_stale_temporaries, save_checkpoint, write_model)
from .data import SFTDataset, batches, next_token_targets
from .optim import AdamW
from .parallelize import init_parallel, parallelize
from .preflight import check_run, eval_flag
from .schedules import learning_rates
from .sequences import IGNORE_INDEX, SequenceBuilder, supervision_from_flags
from .step import TrainStep

LOG_FILE = "train_log.jsonl"
EVAL_RESULTS_FILE = "eval_results.json"
_DTYPE_NAMES = {ms.float32: "float32", ms.float16: "float16", ms.bfloat16: "bfloat16"}
PLOT_FILE = "loss.png"


class TrainingError(ValueError):
    """Bad input to training: the message says what was wrong and what to do."""


class LossScaler:
    """fp16 loss scaling as mindspore.amp.DynamicLossScaler (factor, window), kept on the host so its state is
    plain numbers in the checkpoint; ``static`` keeps the scale and still skips overflowing steps."""

    def __init__(self, kind, scale, factor=2.0, window=1000):
        self.kind, self.scale, self.factor, self.window, self.good_steps = kind, float(scale), factor, window, 0

    def update(self, finite):
        if self.kind != "dynamic":
            return
        if not finite:
            self.scale, self.good_steps = max(self.scale / self.factor, 1.0), 0
        else:
            self.good_steps += 1
            if self.good_steps == self.window:
                self.scale, self.good_steps = self.scale * self.factor, 0


class Trainer:
    def __init__(self, args, log=print):
        self.args = args
        select_device()
        try:
            self.world, self.sp, self.dp = init_parallel(args)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        self.log = log if self.world.rank == 0 else _quiet
        log = self.log
        self.config, self.tokenizer = self._check_before_work()
        builder = SequenceBuilder(self.tokenizer, supervision_from_flags(args.apply_loss_on_only_vision,
                                                                         args.apply_loss_on_only_text))
        try:
            self.dataset = SFTDataset(args.train_data_path, builder, self.config.max_position_embeddings,
                                      args.null_prompt_prob, args.seed,
                                      args.per_device_train_batch_size if args.group_by_task else None, log=log)
        except (FileNotFoundError, ValueError) as e:
            raise TrainingError(f"--train_data_path: {e}") from None
        self.eval_datasets = {}  # metric prefix ("eval", "eval_NAME") -> dataset, as HF's dict of eval datasets
        for name, folders in eval_sets(args.eval_data_path or []).items():
            prefix = "eval" if name is None else f"eval_{name}"
            flag = eval_flag(name)
            try:
                self.eval_datasets[prefix] = SFTDataset(folders, builder, self.config.max_position_embeddings,
                                                        log=lambda message, flag=flag: log(f"{flag}: {message}"))
            except (FileNotFoundError, ValueError) as e:
                raise TrainingError(f"{flag}: {e}") from None
        self.best_metric_key = self._best_metric_key()
        self.samples_per_epoch = len(self.dataset.epoch_order(0, self.dp.size, self.dp.rank))
        micro_per_epoch = self.samples_per_epoch // args.per_device_train_batch_size
        if micro_per_epoch == 0:
            raise TrainingError(f"{self.samples_per_epoch} usable samples are fewer than one batch of "
                                f"--per_device_train_batch_size {args.per_device_train_batch_size}")
        self.updates_per_epoch = math.ceil(micro_per_epoch / args.gradient_accumulation_steps)
        self.total_steps = (args.max_steps if args.max_steps > 0
                            else math.ceil(args.num_train_epochs * self.updates_per_epoch))
        self.lrs = learning_rates(args.learning_rate, args.lr_scheduler_type, args.warmup_steps, self.total_steps,
                                  args.min_learning_rate)
        self.resume_path = self._find_resume()
        self._build_model()

    # ---- setup -------------------------------------------------------------------------------------------------
    def _check_before_work(self):
        """What the flags point at (train/preflight.py), then the output folder and the precision, before anything
        is written -> (config, tokenizer) of the run."""
        a = self.args
        try:
            config, tokenizer = check_run(a, self.sp.size)
        except (FileNotFoundError, ValueError) as e:
            raise TrainingError(str(e)) from None
        # As the original: a flag left unset takes the config's value.
        a.image_area, a.max_position_embeddings = config.image_area, config.max_position_embeddings
        if os.path.exists(a.output_dir) and not os.path.isdir(a.output_dir):
            raise TrainingError(f"--output_dir {a.output_dir!r} exists and is not a folder")
        os.makedirs(a.output_dir, exist_ok=True)
        if not os.access(a.output_dir, os.W_OK):
            raise TrainingError(f"--output_dir {a.output_dir!r} is not writable")
        try:  # before any work: the policy refuses bf16 where there are no bf16 kernels
            self.policy = PrecisionPolicy.for_device("fp16" if a.fp16 else "bf16" if a.bf16 else "fp32")
        except ValueError as e:
            raise TrainingError(f"--bf16: {e}") from None
        return config, tokenizer

    def _best_metric_key(self):
        """The evaluation record key checkpoints are compared by (None: not compared)."""
        a = self.args
        if not (a.load_best_model_at_end or a.metric_for_best_model) or not self.eval_datasets:
            return None
        available = [f"{prefix}_loss" for prefix in self.eval_datasets]
        key = a.metric_for_best_model or available[0]
        if key not in available:
            raise TrainingError(f"--metric_for_best_model {key}: the evaluation logs {', '.join(available)}")
        self.greater_is_better = not key.endswith("loss") if a.greater_is_better is None else a.greater_is_better
        return key

    def _find_resume(self):
        a = self.args
        if self.world.rank == 0:
            remove_stale_temporaries(a.output_dir)
        if a.resume:
            if not os.path.isdir(a.resume):
                raise TrainingError(f"--resume {a.resume!r} is not a folder")
            path = a.resume
        else:
            found = checkpoints(a.output_dir)
            path = found[-1][1] if found else None
        if path:
            try:
                check_resumable(path, self.config)
                check_same_layout(path, self._layout())
            except ValueError as e:
                raise TrainingError(str(e)) from None
        return path

    def _layout(self):
        return process_layout(self.world.size, self.sp.size, self.args.ms_zero_stage)

    def _build_model(self):
        a = self.args
        source = self.resume_path or a.model_name_or_path
        try:
            self.model = Emu3ForCausalLM.from_pretrained(source, config=self.config)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        self.model.set_train(True)
        layers = self.model.model.layers
        frozen = 0 if a.trainable_hidden_layers is None else max(0, len(layers) - a.trainable_hidden_layers)
        for layer in layers[:frozen]:
            for p in layer.get_parameters():
                p.requires_grad = False
        dtype = self.policy.param_dtype
        if dtype != ms.float32:
            apply_precision(self.model, self.policy)
        self.plan, self.forward = parallelize(self.model, self.world, self.sp, a.ms_zero_stage,
                                              a.gradient_checkpointing)
        self.ranks = Ranks(self.world.rank, self.world.size, lambda: self.plan.host_sum(0))
        self.optimizer = AdamW(self.plan.optimizer_params(), a.weight_decay, (a.adam_beta1, a.adam_beta2),
                               a.adam_epsilon)
        scaler_kind = (a.loss_scaler_type or "dynamic") if a.fp16 else "none"
        self.scaler = LossScaler(scaler_kind, a.init_loss_scale if a.fp16 else 1.0, a.loss_scale_factor,
                                 a.scale_window)
        # best_*: the evaluation that is best by --metric_for_best_model so far (HF's trainer_state fields) and where
        # its model is (a checkpoint folder, or --output_dir for the final weights)
        self.state = {"global_step": 0, "epoch": 0, "samples_in_epoch": 0, "best_metric": None,
                      "best_model_checkpoint": None, "best_evaluation": None}
        self.evaluation = None  # the latest evaluation's record
        if self.resume_path:
            self._restore()
        self.train_step = TrainStep(self.model, self.optimizer, a.max_grad_norm, compiled=a.mode == 0,
                                    guard_overflow=scaler_kind != "none", plan=self.plan, forward=self.forward)
        self.log(f"model {source}: {self._trainable_count():,} trainable parameters"
                 f" ({frozen} of {len(layers)} decoder layers frozen), {_DTYPE_NAMES[dtype]}, "
                 f"{'graph' if a.mode == 0 else 'pynative'} mode"
                 + (", recompute" if a.gradient_checkpointing else ""))
        if self.world.size > 1:
            self.log(f"{self.world.size} processes: {self.dp.size} data-parallel x {self.sp.size} sequence-parallel,"
                     f" ZeRO stage {a.ms_zero_stage}")

    def _trainable_count(self):
        rows = self.plan.sharded_rows if self.args.ms_zero_stage == 3 else {}
        return sum(rows[p.name] * p.size // p.shape[0] if p.name in rows else p.size
                   for p in self.model.trainable_params())

    def _restore(self):
        try:
            state, tensors = load_resume_state(self.resume_path, list(self.optimizer.state()), self.ranks)
        except ValueError as e:
            raise TrainingError(str(e)) from None
        self.optimizer.load_state(tensors)
        if self.plan.masters:  # ZeRO-1/2: this rank's fp32 rows, as saved (a low-precision model lost them)
            parts = read_tensors_from(os.path.join(self.resume_path, rank_file(self.world.rank, self.world.size)),
                                      [PARAM_PREFIX + name for name in self.plan.master_by_name])
            for name, master in self.plan.master_by_name.items():
                master.set_data(ms.Tensor(parts[PARAM_PREFIX + name]))
        self.state.update({k: state[k] for k in ("global_step", "epoch", "samples_in_epoch")},
                          **{k: state.get(k) for k in ("best_metric", "best_model_checkpoint", "best_evaluation")})
        self.scaler.scale, self.scaler.good_steps = state["loss_scale"], state["loss_scale_good_steps"]
        ms.set_seed(state["seed"] + state["global_step"])
        self.log(f"resumed from {self.resume_path}: step {self.state['global_step']}, epoch {self.state['epoch']}, "
                 f"{self.state['samples_in_epoch']} samples into it")

    # ---- the loop ----------------------------------------------------------------------------------------------
    def train(self):
        a = self.args
        self.log(f"{len(self.dataset)} samples ({', '.join(self.dataset.tasks)}), batch "
                 f"{a.per_device_train_batch_size} x {a.gradient_accumulation_steps} accumulated"
                 f"{' (one task per batch)' if a.group_by_task else ''}, "
                 f"{self.updates_per_epoch} steps per epoch, {self.total_steps} steps")
        trim_log(a.output_dir, self.state["global_step"])
        window = _new_window()
        while self.state["global_step"] < self.total_steps:
            epoch = self.state["epoch"]
            micro_batches = batches(self.dataset.samples(epoch, self.state["samples_in_epoch"], self.dp.size,
                                                         self.dp.rank), a.per_device_train_batch_size)
            while self.state["global_step"] < self.total_steps:
                micro = [self._rank_slice(ids, mask, next_token_targets(labels))
                         for ids, mask, labels in itertools.islice(micro_batches, a.gradient_accumulation_steps)]
                if not micro:  # the epoch is used up
                    self.state.update(epoch=epoch + 1, samples_in_epoch=0)
                    if a.eval_strategy == "epoch" and self.state["global_step"] < self.total_steps:
                        self.evaluate()
                    self._save_if(epoch_end=True)
                    break
                self._optimizer_step(micro, window)
                if self.state["global_step"] % a.logging_steps == 0 or self.state["global_step"] == self.total_steps:
                    self._log_step(window)
                    window = _new_window()
                if (a.eval_strategy == "steps" and self.state["global_step"] % a.eval_steps == 0
                        and self.state["global_step"] < self.total_steps):
                    self.evaluate()
                self._save_if()
        results = self.evaluate() if self.eval_datasets else None
        self._track_best(a.output_dir)  # the final weights compete too
        best = self.state["best_model_checkpoint"]
        if a.load_best_model_at_end and best and best != a.output_dir and self.publish_best(best):
            results = self.state["best_evaluation"]
        else:
            self.save_final()
        if results is not None:
            self._write_eval_results(results)

    def _rank_slice(self, ids, mask, targets):
        """Under sequence parallelism this rank's tokens of the batch (and the whole padding mask)."""
        if self.sp.size == 1:
            return ids, mask, targets
        return split_sequence(ids, self.sp), mask, split_sequence(targets, self.sp)

    def _optimizer_step(self, micro, window):
        step = self.state["global_step"]
        loss, norm, finite, _ = self.train_step.step(micro, self.lrs[step], self.scaler.scale)
        self.scaler.update(finite)
        samples = sum(len(ids) for ids, _, _ in micro)
        self.state["global_step"] = step + 1
        self.state["samples_in_epoch"] += samples
        window["loss"] += loss if finite else 0.0
        window["n"] += int(finite)
        window["skipped"] += int(not finite)
        window["tokens"] += int(sum(mask.sum() for _, mask, _ in micro)) * self.dp.size  # over all ranks
        window["samples"] += samples * self.dp.size
        window["grad_norm"] = norm

    def _log_step(self, window):
        norm = window["grad_norm"]
        elapsed = max(time.time() - window["start"], 1e-9)
        record = {"step": self.state["global_step"], "epoch": round(self._epoch_float(), 4),
                  "loss": window["loss"] / window["n"] if window["n"] else None,
                  "lr": self.lrs[self.state["global_step"] - 1], "grad_norm": norm,
                  "loss_scale": self.scaler.scale, "skipped_steps": window["skipped"],
                  "tokens_per_s": window["tokens"] / elapsed, "samples_per_s": window["samples"] / elapsed}
        if self.world.rank == 0:
            append_log(self.args.output_dir, record)
        loss = "overflow" if record["loss"] is None else f"{record['loss']:.4f}"
        self.log(f"step {record['step']}/{self.total_steps} epoch {record['epoch']:.2f} loss {loss} "
                 f"lr {record['lr']:.3g} grad_norm {norm:.3g} loss_scale {record['loss_scale']:g} "
                 f"{record['tokens_per_s']:.0f} tokens/s {record['samples_per_s']:.2f} samples/s")

    def evaluate(self):
        """The loss of the current model on each --eval_data_path set: the mean over its supervised tokens, as the
        training loss (no null prompts). Each data-parallel rank evaluates its part, every sample exactly once.
        Logged as one record per set (``eval_loss``, or ``eval_NAME_loss`` for a named set, as HF Trainer names
        them); returns the records merged."""
        merged = {}
        self.model.set_train(False)  # no dropout (the released configs train with attention_dropout 0.1)
        try:
            for prefix, dataset in self.eval_datasets.items():
                merged.update(self._evaluate_set(prefix, dataset))
        finally:
            self.model.set_train(True)
        self.evaluation = merged
        return merged

    def _track_best(self, model_path):
        """Make the latest evaluation the best one if it is (``model_path``: where the evaluated model is saved),
        when it evaluated the current step and checkpoints are compared."""
        key, record = self.best_metric_key, self.evaluation
        if key is None or record is None or record["step"] != self.state["global_step"]:
            return
        best, value = self.state["best_metric"], record[key]
        if best is None or (value > best if self.greater_is_better else value < best):
            self.state.update(best_metric=value, best_model_checkpoint=model_path, best_evaluation=record)

    def _evaluate_set(self, prefix, dataset):
        a, start = self.args, time.time()
        loss_sum, tokens = 0.0, 0
        rows = dataset.evaluation_samples(a.per_device_eval_batch_size, self.dp.size, self.dp.rank)
        for ids, mask, labels in batches(rows, a.per_device_eval_batch_size):
            ids, mask, targets = self._rank_slice(ids, mask, next_token_targets(labels))
            loss_sum += self.train_step.loss_sum(ids, mask, targets)
            tokens += int((targets != IGNORE_INDEX).sum())
        loss_sum, tokens = self.plan.host_sum(loss_sum), int(round(self.plan.host_sum(tokens)))
        loss = loss_sum / max(tokens, 1)
        record = {"step": self.state["global_step"], "epoch": round(self._epoch_float(), 4), f"{prefix}_loss": loss,
                  f"{prefix}_samples": len(dataset), f"{prefix}_tokens": tokens,
                  f"{prefix}_seconds": round(time.time() - start, 2)}
        if self.world.rank == 0:
            append_log(a.output_dir, record)
        self.log(f"eval step {record['step']}/{self.total_steps}: {prefix}_loss {loss:.4f} "
                 f"({len(dataset)} samples, {tokens} supervised tokens, {record[prefix + '_seconds']:.1f} s)")
        return record

    def _write_eval_results(self, merged):
        """RUN/eval_results.json: the final model's evaluation, with each set's perplexity (HF's example
        scripts)."""
        if self.world.rank == 0:
            results = dict(merged)
            for prefix in self.eval_datasets:
                results[f"{prefix}_perplexity"] = math.exp(min(merged[f"{prefix}_loss"], 700.0))
            atomic_write_json(os.path.join(self.args.output_dir, EVAL_RESULTS_FILE), results, indent=2)

    def _epoch_float(self):
        return self.state["epoch"] + self.state["samples_in_epoch"] / max(self.samples_per_epoch, 1)

    # ---- saving ------------------------------------------------------------------------------------------------
    def _weights(self):
        """The model to export, one whole fp32 tensor at a time (``ModelExport``), and this rank's parts of it
        for its rank file (filled while the export is iterated). The values are the optimizer's fp32 masters
        (ZeRO-1/2: this rank's rows); frozen low-precision parameters never change, so they are read back from the
        folder the model was loaded from instead of widening their fp16 copies."""
        targets = self.optimizer.master_weights()
        source = self.resume_path or self.args.model_name_or_path
        sharded = self.plan.sharded_rows if self.world.size > 1 else {}
        named = list(self.model.parameters_and_names())
        parts = {}

        def arrays():
            for name, param in named:
                local = self.plan.master_by_name.get(name)
                if local is None:
                    local = targets.get(name)
                if local is None and param.dtype != ms.float32:  # frozen: every rank takes this branch
                    whole = read_tensors(source, [name])[name].astype("float32")
                    if self.world.size > 1 and (name in sharded or self.world.rank == 0):
                        parts[PARAM_PREFIX + name] = (shard_rows(whole, self.world.size, self.world.rank)
                                                      if name in sharded else whole)
                    yield name, whole
                    continue
                local = (param if local is None else local).asnumpy().astype("float32")
                if self.world.size > 1 and (name in sharded or self.world.rank == 0):
                    parts[PARAM_PREFIX + name] = local
                yield name, self.plan.full_value(name, local)

        specs = [(name, ((sharded[name],) + tuple(p.shape[1:])) if name in sharded else tuple(p.shape), "float32")
                 for name, p in named]
        return ModelExport(specs, arrays), parts

    def _save_if(self, epoch_end=False):
        a, step = self.args, self.state["global_step"]
        due = (a.save_strategy == "steps" and step % a.save_steps == 0 and not epoch_end) or \
              (a.save_strategy == "epoch" and epoch_end)
        if due and 0 < step < self.total_steps:
            self.save_checkpoint()

    def save_checkpoint(self):
        a = self.args
        self._track_best(os.path.join(a.output_dir, f"checkpoint-{self.state['global_step']}"))
        best = self.state["best_model_checkpoint"]
        state = dict(self.state, total_steps=self.total_steps, loss_scale=self.scaler.scale,
                     loss_scale_good_steps=self.scaler.good_steps, seed=a.seed,
                     train_data_path=[os.path.abspath(p) for p in a.train_data_path], **self._layout(),
                     sharded_rows=self.plan.sharded_rows if self.world.size > 1 else {})
        export, parts = self._weights()

        def rank_state():  # after the export has filled ``parts``
            return dict(self.optimizer.state(), **parts) if self.world.size > 1 else self.optimizer.state()

        path = save_checkpoint(a.output_dir, self.state["global_step"], export, self.config,
                               self.tokenizer, rank_state, state, a.save_total_limit, self.ranks,
                               keep=os.path.basename(best) if best and a.load_best_model_at_end else None)
        if self.world.rank == 0:
            plot_losses(a.output_dir)
        self.log(f"saved {path}")
        return path

    def publish_best(self, checkpoint):
        """The final model is the best checkpoint's (--load_best_model_at_end): its model files, copied. False
        (and nothing copied) when that checkpoint is gone: the final weights are saved instead, not lost."""
        path = os.path.join(self.args.output_dir, os.path.basename(checkpoint))
        if not os.path.isfile(os.path.join(path, "config.json")):
            self.log(f"warning: --load_best_model_at_end: the best checkpoint {path} is gone (deleted by hand?); "
                     "the final model is the last weights instead (the best one's evaluation is in train_log.jsonl)")
            return False
        if self.world.rank == 0:
            copy_model_files(path, self.args.output_dir)
            plot_losses(self.args.output_dir)
        self.ranks.barrier()
        self.log(f"final model in {self.args.output_dir}: the best checkpoint's, {os.path.basename(path)} "
                 f"({self.best_metric_key} {self.state['best_metric']:.4f}; --load_best_model_at_end)")
        return True

    def save_final(self):
        write_model(self.args.output_dir, self._weights()[0], self.config, self.tokenizer, self.ranks)
        if self.world.rank == 0:
            plot_losses(self.args.output_dir)
        self.log(f"final model in {self.args.output_dir} (loss curve: {os.path.join(self.args.output_dir, PLOT_FILE)})")


def _quiet(*_args, **_kwargs):
    pass


def _new_window():
    return {"loss": 0.0, "n": 0, "tokens": 0, "samples": 0, "start": time.time(), "skipped": 0, "grad_norm": 0.0}


def read_log(output_dir):
    """The records of RUN/train_log.jsonl ([] before the first log line)."""
    path = os.path.join(output_dir, LOG_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def append_log(output_dir, record):
    """One record (a dict) as a line of RUN/train_log.jsonl."""
    with open(os.path.join(output_dir, LOG_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def trim_log(output_dir, step):
    """After a resume from ``step``, drop the log lines of the steps that are about to be trained again."""
    path = os.path.join(output_dir, LOG_FILE)
    if os.path.isfile(path):
        atomic_write(path, "".join(json.dumps(r) + "\n" for r in read_log(output_dir) if r["step"] <= step))


def evaluation_curves(records):
    """{evaluation set name (None: the unnamed set): [(step, loss)]} of train_log records (``eval_loss``,
    ``eval_NAME_loss``)."""
    curves = {}
    for r in records:
        for key, value in r.items():
            if key == "eval_loss" or (key.startswith("eval_") and key.endswith("_loss")):
                name = None if key == "eval_loss" else key[len("eval_"):-len("_loss")]
                curves.setdefault(name, []).append((r["step"], value))
    return curves


def final_evaluation_losses(records):
    """{evaluation set name: its loss at the last evaluation} of train_log records."""
    return {name: curve[-1][1] for name, curve in evaluation_curves(records).items()}


def plot_losses(output_dir):
    """RUN/loss.png from RUN/train_log.jsonl."""
    records = read_log(output_dir)
    points = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    curves = evaluation_curves(records)
    if not points:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(*zip(*points), marker="." if len(points) < 50 else None, label="training")
    for name, curve in curves.items():
        ax.plot(*zip(*curve), marker="o", label=f"evaluation ({name or '--eval_data_path'})")
    if curves:
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(os.path.join(output_dir, PLOT_FILE)) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
