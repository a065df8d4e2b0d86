"""One readable training loop for every neural router (in the spirit of nanoGPT's train.py).

AdamW, cosine schedule with linear warm-up, gradient accumulation, gradient clipping, bf16 autocast
where the precision setting resolves to bf16 (a GPU, or a CPU with native bf16), a validation pass
and a checkpoint every ``eval_every`` optimizer steps, the best step chosen on a validation split
(carved from the training fold by the caller, never the test fold), early stopping after
``patience`` validations without a better one (``epochs`` is then the most it trains), resume from
the last checkpoint, seeds, and a progress bar with loss and ETA.

It goes through 🤗 Accelerate, so the same code runs on one CPU, one GPU, or many processes under
``accelerate launch`` (each process sees its shard of every batch; the batch size is per process).

The model contract: ``model(batch) -> {"loss": scalar, "logits": [B, T]}``; validation batches
also carry ``batch["utility"]`` ([B, T] normalised scores, NaN where missing), or
``batch["metric_utility"]`` (``data/labels.metric_utility``: its mean is the average μn), and the
validation metric is the mean utility of the top-scored candidate (higher is better; ties: lower
loss). Each validation is kept in ``TrainResult.history`` (the validation curve).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from safetensors.torch import load_model, save_model
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from lookahead_router.errors import LookaheadError
from lookahead_router.training.config import TrainConfig
from lookahead_router.precision import BF16, resolve_precision

STATE_FILE = "trainer_state.json"


@dataclass
class TrainResult:
    best_step: int
    best_metric: float
    steps: int
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False
    precision: str = "fp32"       # the arithmetic training ran in (bf16: autocast)

    def to_json(self) -> dict:
        """What a saved router records about its training (router.json, ``extra.training``)."""
        return {"best_step": self.best_step, "steps": self.steps, "best_metric": self.best_metric,
                "stopped_early": self.stopped_early, "precision": self.precision, "history": self.history}


def distributed_state() -> PartialState:
    """The process group `accelerate launch` set up. On a machine without CUDA, ask for the CPU
    explicitly: `accelerate launch --multi_gpu --num_processes N` then trains N CPU processes (gloo)."""
    return PartialState(cpu=not torch.cuda.is_available())


@torch.no_grad()
def validate(model, loader, accelerator: Accelerator, bf16: bool = False) -> tuple[float, float]:
    """(mean utility of the chosen candidate, mean loss) over the validation set."""
    model.eval()
    utilities, losses = [], []
    for batch in loader:
        with _autocast(accelerator, bf16):
            out = model(batch)
        metric_utility = batch.get("metric_utility", batch["utility"])
        logits, utility = accelerator.gather_for_metrics((out["logits"].float(), metric_utility))
        chosen = utility.gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
        utilities.append(torch.nan_to_num(chosen, nan=0.0))
        losses.append(accelerator.gather_for_metrics(out["loss"].detach().float().reshape(1)))
    model.train()
    return torch.cat(utilities).mean().item(), torch.cat(losses).mean().item()


def train(model: torch.nn.Module, train_set: Dataset, val_set: Dataset, collate, config: TrainConfig,
          accelerator: Accelerator | None = None) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best validation step."""
    if len(train_set) == 0:
        raise LookaheadError("the training set is empty")
    if len(val_set) == 0:
        raise LookaheadError("the validation set is empty: give the router more training rows")
    set_seed(config.seed)
    # bf16 autocast where the precision setting resolves to bf16 (precision.py): a GPU, or a CPU
    # with native bf16 (where it trains the cpu preset's routers faster; bench/training_cost.py)
    # (autocast by hand rather than Accelerate's mixed_precision, which is fixed per process: one
    # process may train routers in both, e.g. bench/training_precision.py)
    use_bf16 = config.bf16 and resolve_precision() == BF16
    accelerator = accelerator or Accelerator(
        cpu=not torch.cuda.is_available(), gradient_accumulation_steps=config.grad_accum,
        # backbones carry weights a router never uses (BERT's pooler, an LM head): let DDP skip them
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if config.output_dir:
        out_dir = Path(config.output_dir)
    else:  # one temporary folder, made by the main process and shared with the others
        made = [tempfile.mkdtemp(prefix="lookahead-train-") if accelerator.is_main_process else None]
        out_dir = Path(broadcast_object_list(made)[0])
    train_loader = DataLoader(train_set, batch_size=config.batch_size, shuffle=True, collate_fn=collate,
                              generator=torch.Generator().manual_seed(config.seed))
    val_loader = DataLoader(val_set, batch_size=config.batch_size, collate_fn=collate)
    # Steps counted on the unsharded loader: Accelerate steps a prepared scheduler once per process.
    updates_per_epoch = math.ceil(len(train_loader) / config.grad_accum)
    total = max(1, math.ceil(updates_per_epoch * config.epochs))
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler)
    total = max(1, math.ceil(math.ceil(len(train_loader) / config.grad_accum) * config.epochs))

    state = {"step": 0, "best_step": 0, "best_metric": -math.inf, "best_loss": math.inf, "history": [],
             "since_best": 0}
    last = out_dir / "last"
    if config.resume and (last / STATE_FILE).is_file():
        accelerator.load_state(str(last))
        state = json.loads((last / STATE_FILE).read_text())
        accelerator.print(f"resumed from {last} at step {state['step']} of {total}")

    model.train()
    bar = tqdm(total=total, initial=state["step"], desc="train", unit="step",
               disable=not (config.progress and accelerator.is_main_process))
    batches_per_epoch = len(train_loader)
    if batches_per_epoch == 0:
        raise LookaheadError("the training loader yields no batch")
    done_batches = state["step"] * config.grad_accum
    running = None
    while state["step"] < total:
        epoch, skip = divmod(done_batches, batches_per_epoch)
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, skip) if skip else train_loader
        for batch in loader:
            with accelerator.accumulate(model):
                with _autocast(accelerator, use_bf16):
                    loss = model(batch)["loss"]
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            done_batches += 1
            running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            if state["step"] % config.eval_every == 0 or state["step"] == total:
                _checkpoint(model, val_loader, accelerator, state, out_dir, running, use_bf16)
            postfix = {"loss": f"{running:.4f}"}
            if state["history"]:   # the best validation average μn so far (in %), once there is one
                postfix["best val μn"] = f"{100 * state['best_metric']:.1f}"
            bar.set_postfix(postfix)
            if state["step"] >= total or _patience_spent(state, config):
                break
        if _patience_spent(state, config):
            break
    bar.close()
    accelerator.wait_for_everyone()
    # keep_fp32_wrapper=False takes autocast off the model's forward: scoring after training then
    # runs exactly as it does in a router loaded from disk
    load_model(accelerator.unwrap_model(model, keep_fp32_wrapper=False), str(out_dir / "best" / "model.safetensors"))
    accelerator.wait_for_everyone()
    if config.output_dir is None and accelerator.is_main_process:
        shutil.rmtree(out_dir, ignore_errors=True)
    return TrainResult(state["best_step"], state["best_metric"], state["step"], state["history"],
                       stopped_early=state["step"] < total, precision=BF16 if use_bf16 else "fp32")


def _autocast(accelerator: Accelerator, enabled: bool):
    return torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=enabled)


def _patience_spent(state: dict, config: TrainConfig) -> bool:
    return config.patience > 0 and state.get("since_best", 0) >= config.patience


def _checkpoint(model, val_loader, accelerator: Accelerator, state: dict, out_dir: Path,
                train_loss: float, bf16: bool) -> None:
    metric, val_loss = validate(model, val_loader, accelerator, bf16)
    state["history"].append({"step": state["step"], "train_loss": train_loss, "val_loss": val_loss,
                             "val_utility": metric})
    better = metric > state["best_metric"] or (metric == state["best_metric"] and val_loss < state["best_loss"])
    state["since_best"] = 0 if better else state.get("since_best", 0) + 1
    if better:
        state.update(best_step=state["step"], best_metric=metric, best_loss=val_loss)
        if accelerator.is_main_process:
            (out_dir / "best").mkdir(parents=True, exist_ok=True)
            save_model(accelerator.unwrap_model(model), str(out_dir / "best" / "model.safetensors"))
    accelerator.save_state(str(out_dir / "last"))
    if accelerator.is_main_process:
        (out_dir / "last" / STATE_FILE).write_text(json.dumps(state, indent=1))
    accelerator.wait_for_everyone()
