"""The training engine's settings (``engine.py``), apart from the engine: the routers' configs
hold a ``TrainConfig``, and reading them (`lookahead routers`, `lookahead train --help`) should not
import PyTorch."""

from __future__ import annotations

from dataclasses import dataclass

from lookahead_router.options import option


@dataclass
class TrainConfig:
    lr: float = option(5e-5, "Peak learning rate (AdamW, cosine schedule).", positive=True)
    batch_size: int = option(64, "Prompts per step and process (effective: x processes x grad_accum).",
                             positive=True)
    epochs: float = option(2.0, "Epochs at most (with patience, training may stop earlier).", positive=True)
    grad_accum: int = option(1, "Gradient accumulation steps.", positive=True)
    warmup_ratio: float = option(0.1, "Share of the steps spent warming the learning rate up.", low=0.0, high=1.0)
    weight_decay: float = option(0.01, "AdamW weight decay (not on biases and norms).", low=0.0)
    max_grad_norm: float = option(1.0, "Gradient clipping norm.", positive=True)
    eval_every: int = option(100, "Optimizer steps between validations (each saves a checkpoint).", positive=True)
    patience: int = option(0, "Stop after this many validations without a better average μn (0: never "
                           "stop early).", low=0)
    seed: int = option(0, "Seed of initialisation, shuffling and the validation carve-out.")
    bf16: bool = option(True, "Autocast to bf16 where the precision setting resolves to bf16 (a GPU or a "
                        "CPU with native bf16); false: fp32 always.")
    output_dir: str | None = option(None, "Checkpoint folder (default: a temporary one).")
    resume: bool = option(False, "Continue from the last checkpoint in output_dir.")
    progress: bool = option(True, "Show progress bars.")
