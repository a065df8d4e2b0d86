"""The Lookahead routers (paper, Section 4): ``lookahead-clm`` (sequence level, causal LM;
``lookahead_clm.py``) and ``lookahead-mlm`` (token level, masked LM with curriculum masking;
``lookahead_mlm.py``). The Figure 4 ablations are these routers with other defaults, named in
``routers/registry.py``:

  lookahead-clm-norm, lookahead-mlm-norm   without response modelling (λ = 0)
  lookahead-mlm-start / -random / -nocm    start-masking, random spans, no curriculum
  lookahead-mlm-separate                   one candidate per sequence instead of one joint sequence

Training reads each candidate's response (its first ``response_length`` / ``m`` tokens) next to
its label; scoring needs only the prompt: one forward pass, no decoding. Options are a
``LookaheadCLMConfig`` or ``LookaheadMLMConfig`` (Appendix C.4 / C.5 defaults: λ and epochs per
realisation); the sequence plan (prompt width, m) is fixed at fit time and saved.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.routers.backbones import CAUSAL, ENCODER, max_positions
from lookahead_router.routers.config import LookaheadCLMConfig, LookaheadMLMConfig
from lookahead_router.routers.lookahead_clm import LookaheadCLM
from lookahead_router.routers.lookahead_mlm import LookaheadMLM
from lookahead_router.routers.neural import NeuralRouter
from lookahead_router.training.engine import distributed_state

CHARS_PER_TOKEN = 8  # responses are cut to this many characters per kept token before tokenising


class LookaheadRouter(NeuralRouter):
    """Lookahead: predicts each candidate's response latent from the prompt, scores from it."""

    variant: str = "mlm"   # "clm" (sequence level) | "mlm" (token level)

    def summary(self) -> str:
        c = self.config
        what = ("sequence-level (causal LM; hidden state at MID_t)" if self.variant == "clm" else
                f"token-level (masked LM, m={c.m}, {c.masking}-masking, {'joint' if c.joint else 'separate'})")
        return f"Lookahead {what}, λ={c.rm_weight}, {self.kind} backbone ({self.backbone})"

    def _plan(self) -> dict:
        """Prompt width and response horizon within the backbone's positions. The MLM's sequence
        holds [CLS] x [SEP] and T blocks of m + 1: the prompt gives way first (down to a quarter
        of the context), then m is shortened; both with a warning."""
        c, T = self.config, len(self.candidates)
        limit = max_positions(self.backbone, self.kind)
        q = min(c.max_length, limit)
        if self.variant == "clm":
            return {"query_length": q, "response_length": min(c.response_length, limit - q - 1)}
        if q + T * (c.m + 1) > limit:
            q = min(q, max(limit - T * (c.m + 1), limit // 4))
            if q < c.max_length:
                warnings.warn(f"{self.name}: prompts cut to {q} tokens so that {T} blocks of m + 1 = "
                              f"{c.m + 1} tokens fit the backbone's {limit} positions")
        m = min(c.m, max(1, (limit - q) // T - 1))
        if m < c.m:
            warnings.warn(f"{self.name}: m shortened from {c.m} to {m} so that {q} prompt tokens + "
                          f"{T} blocks of m + 1 fit the backbone's {limit} positions")
        return {"query_length": q, "m": m}

    def _extra_columns(self, ds: RoutingDataset) -> dict:
        """[n, T, L] token ids of each response's first L tokens and [n, T] their counts."""
        L = self.plan["m"] if self.variant == "mlm" else self.plan["response_length"]
        ids, lengths = np.zeros((len(ds), len(self.candidates), L), np.int64), np.zeros((len(ds), len(self.candidates)), np.int64)
        for t in range(len(self.candidates)):
            texts = [r[:CHARS_PER_TOKEN * L] if isinstance(r, str) else "" for r in ds.responses[:, t]]
            enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=L)["input_ids"]
            for i, tokens in enumerate(enc):
                ids[i, t, :len(tokens)], lengths[i, t] = tokens, len(tokens)
        return {"response_ids": ids, "response_len": lengths}

    def _build(self) -> torch.nn.Module:
        c, T = self.config, len(self.candidates)
        trunk = self._trunk(n_extra=T, reconstruct=c.rm_weight > 0)
        if self.variant == "clm":
            return LookaheadCLM(trunk, T, c.rm_weight, c.hidden, c.dropout, c.rec_tokens)
        return LookaheadMLM(trunk, T, self.plan["m"], c.rm_weight, c.alpha, c.masking, c.joint, c.hidden,
                            c.dropout, c.rec_tokens)

    def _before_training(self, n_rows: int) -> None:
        # the curriculum counts micro-batches of this process
        procs = distributed_state().num_processes
        self.model.total_steps = max(1, int(math.ceil(n_rows / (self.config.train.batch_size * procs)) * self.config.train.epochs))


class LookaheadCLMRouter(LookaheadRouter):
    """Lookahead-CLM: query ‖ MID_t into a causal LM; the hidden state at MID_t is candidate t's
    response latent, trained to reconstruct the response by next-token prediction."""
    name, variant, kind, Config = "lookahead-clm", "clm", CAUSAL, LookaheadCLMConfig


class LookaheadMLMRouter(LookaheadRouter):
    """Lookahead-MLM: [CLS] query ‖ m MID tokens per candidate into a masked LM, curriculum masking
    from the end of each response; [CLS] attention summarises the candidates' latents."""
    name, variant, kind, Config = "lookahead-mlm", "mlm", ENCODER, LookaheadMLMConfig
