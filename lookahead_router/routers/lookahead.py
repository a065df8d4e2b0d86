"""The Lookahead routers (paper, Section 4): ``lookahead-clm`` (sequence level, causal LM) and
``lookahead-mlm`` (token level, masked LM with curriculum masking), plus the Figure 4 ablations
as router names:

  lookahead-clm-norm, lookahead-mlm-norm   without response modelling (λ = 0)
  lookahead-mlm-start / -random / -nocm    start-masking, random spans, no curriculum
  lookahead-mlm-separate                   one candidate per sequence instead of one joint sequence

Training reads each candidate's response (the first ``response_length`` / ``m`` tokens) next to
its label; scoring needs only the prompt: one forward pass, no decoding. The modules are in
``lookahead_model.py``; training goes through the shared engine.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import binary_labels, normalised_scores
from lookahead_router.data.splits import validation_split
from lookahead_router.routers.backbones import (CAUSAL, DEFAULT_BACKBONE, ENCODER, load_backbone, load_tokenizer,
                                                max_positions)
from lookahead_router.routers.base import Router, RouterError, register
from lookahead_router.routers.classifiers import RowDataset
from lookahead_router.routers.features import FeatureExtractor, cache_root
from lookahead_router.routers.lookahead_model import (MASKINGS, BackboneSequenceEncoder, FrozenTrunkEncoder,
                                                      LookaheadModel)
from lookahead_router.training.engine import config_from, distributed_state, train

DEFAULTS = dict(backbone=None, finetune=False, max_length=256, hidden=256, dropout=0.1, threshold=0.8,
                val_fraction=0.1, lr=5e-5, batch_size=64, grad_accum=1, eval_every=100, seed=0,
                output_dir=None, resume=False, progress=True,
                # the small transformer over a frozen backbone (finetune=False)
                width=256, layers=1, heads=4, vocab_size=2048)
VARIANT_DEFAULTS = {  # Appendix C.5 / Figure 7: λ, epochs; CLM reconstructs the response, MLM its first m tokens
    "clm": dict(rm_weight=0.5, epochs=2.0, response_length=256),
    "mlm": dict(rm_weight=0.2, epochs=4.0, m=64, alpha=0.4, masking="end", joint=True),
}
ABLATIONS = {
    "lookahead-clm": ("clm", {}), "lookahead-clm-norm": ("clm", {"rm_weight": 0.0}),
    "lookahead-mlm": ("mlm", {}), "lookahead-mlm-norm": ("mlm", {"rm_weight": 0.0}),
    "lookahead-mlm-start": ("mlm", {"masking": "start"}), "lookahead-mlm-random": ("mlm", {"masking": "random"}),
    "lookahead-mlm-nocm": ("mlm", {"masking": "none"}), "lookahead-mlm-separate": ("mlm", {"joint": False}),
}
_EXTRACTORS: dict[tuple, FeatureExtractor] = {}
CHARS_PER_TOKEN = 8  # responses are cut to this many characters per kept token before tokenising


class LookaheadRouter(Router):
    """Lookahead: predicts each candidate's response latent from the prompt, scores from it."""

    def __init__(self, name: str, **options):
        variant, preset = ABLATIONS[name]
        known = set(DEFAULTS) | set(VARIANT_DEFAULTS[variant])
        unknown = set(options) - known
        if unknown:
            raise RouterError(f"{name}: unknown option(s) {sorted(unknown)}; known: {sorted(known)}")
        super().__init__(**options)
        self.name, self.variant = name, variant
        self.kind = CAUSAL if variant == "clm" else ENCODER
        self.opts = {**DEFAULTS, **VARIANT_DEFAULTS[variant], **preset, **options}
        if variant == "mlm" and self.opts["masking"] not in MASKINGS:
            raise RouterError(f"{name}: masking must be one of {MASKINGS}, got {self.opts['masking']!r}")
        self.model: LookaheadModel | None = None
        self.train_result = None
        self.meta: dict = {}

    def summary(self) -> str:
        o = self.opts
        what = ("sequence-level (causal LM; hidden state at MID_t)" if self.variant == "clm" else
                f"token-level (masked LM, m={o['m']}, {o['masking']}-masking, "
                f"{'joint' if o['joint'] else 'separate'})")
        return f"Lookahead {what}, λ={o['rm_weight']}, {self.kind} backbone ({o['backbone'] or DEFAULT_BACKBONE[self.kind]})"

    # ---- inputs --------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return load_tokenizer(self.opts["backbone"], self.kind)

    @property
    def extractor(self) -> FeatureExtractor:
        """One extractor per (backbone, length, cache) in a process: a benchmark's folds and
        ablations share the prompt states it has loaded (about 1 GB for the release)."""
        key = (self.opts["backbone"], self.kind, self.meta["query_length"], str(cache_root()))
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = FeatureExtractor(*key[:3], progress=self.opts["progress"], tokens=True)
        return _EXTRACTORS[key]

    def _plan(self, max_positions: int) -> None:
        """Prompt width and block length within the backbone's positions. The MLM's sequence holds
        the prompt and T blocks of m: the prompt gives way first (down to a quarter of the
        context), then m is shortened; both with a warning."""
        o, T = self.opts, len(self.candidates)
        q = min(o["max_length"], max_positions)
        if self.variant == "clm":
            self.meta.update(query_length=q, response_length=min(o["response_length"], max_positions - q - 1))
            return
        if q + T * o["m"] > max_positions:
            q = min(q, max(max_positions - T * o["m"], max_positions // 4))
            if q < o["max_length"]:
                warnings.warn(f"{self.name}: prompts cut to {q} tokens so that {T} x m = {T * o['m']} "
                              f"MID tokens fit the backbone's {max_positions} positions")
        m = min(o["m"], max(1, (max_positions - q) // T))
        if m < o["m"]:
            warnings.warn(f"{self.name}: m shortened from {o['m']} to {m} so that {q} prompt tokens + "
                          f"{T} x m fit the backbone's {max_positions} positions")
        self.meta.update(query_length=q, m=m)

    def _queries(self, prompts: list[str]) -> list[np.ndarray]:
        if self.opts["finetune"]:
            enc = self.tokenizer(prompts, truncation=True, max_length=self.meta["query_length"])
            return [np.asarray(ids, dtype=np.int64) for ids in enc["input_ids"]]
        # cached as fp16 (half the disk); fp32 here, since fp16 arithmetic is slow on CPUs
        return [q.astype(np.float32) for q in self.extractor(prompts, desc=f"{self.name} prompt states")]

    def _responses(self, ds: RoutingDataset) -> tuple[np.ndarray, np.ndarray]:
        """[n, T, L] token ids of each response's first L tokens and [n, T] their counts."""
        L = self.meta["m"] if self.variant == "mlm" else self.meta["response_length"]
        n, T = len(ds), len(self.candidates)
        ids, lengths = np.zeros((n, T, L), np.int64), np.zeros((n, T), np.int64)
        for t in range(T):
            texts = [r[:CHARS_PER_TOKEN * L] if isinstance(r, str) else "" for r in ds.responses[:, t]]
            enc = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=L)["input_ids"]
            for i, tok in enumerate(enc):
                ids[i, t, :len(tok)], lengths[i, t] = tok, len(tok)
        return ids, lengths

    def _columns(self, ds: RoutingDataset) -> dict:
        ds = ds.select_candidates(self.candidates)
        responses, lengths = self._responses(ds)
        return {"query": self._queries(ds.queries["prompt"].tolist()),
                "labels": binary_labels(ds, self.opts["threshold"]).astype(np.float32),
                "utility": normalised_scores(ds).astype(np.float32),
                "response_ids": responses, "response_len": lengths}

    def _collate(self, rows: list[dict]) -> dict:
        """Prompts are left-padded to the batch's longest, so every block starts at one index."""
        queries = [torch.from_numpy(np.asarray(r["query"])) for r in rows]
        pad = self.model.encoder.pad_id if self.opts["finetune"] else 0.0
        query = torch.nn.utils.rnn.pad_sequence(queries, batch_first=True, padding_value=pad, padding_side="left")
        batch = {"query": query if self.opts["finetune"] else query.float(),
                 "query_len": torch.tensor([len(q) for q in queries])}
        for key in ("labels", "utility", "response_ids", "response_len"):
            if key in rows[0]:
                batch[key] = torch.from_numpy(np.stack([r[key] for r in rows]))
        return batch

    # ---- contract ------------------------------------------------------------------------
    def _build(self, feature_dim: int | None, vocab: np.ndarray | None, loading: bool = False) -> None:
        o, T = self.opts, len(self.candidates)
        if o["finetune"]:
            bb = load_backbone(o["backbone"], self.kind)
            encoder = BackboneSequenceEncoder(bb, T, mean_init=not loading)  # loading: weights follow
        else:
            base_vocab = len(self.tokenizer)
            blocks = T * (self.meta.get("m") or self.meta["response_length"] + 1)
            encoder = FrozenTrunkEncoder(self.kind, feature_dim, torch.as_tensor(vocab), base_vocab, T,
                                         o["width"], o["layers"], o["heads"], self.meta["query_length"] + blocks + 8)
        self.model = LookaheadModel(self.variant, encoder, T, {**o, "m": self.meta.get("m")})

    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        o = self.opts
        if validation is None:
            ds, validation = validation_split(ds, o["val_fraction"], o["seed"])
        torch.manual_seed(o["seed"])
        self.meta = {}
        self._plan(max_positions(o["backbone"], self.kind))
        train_cols, val_cols = self._columns(ds), self._columns(validation)
        if o["finetune"]:
            self._build(None, None)
        else:
            self._build(train_cols["query"][0].shape[1], _frequent_tokens(train_cols, o["vocab_size"]))
        procs = distributed_state().num_processes
        steps_per_epoch = -(-len(ds) // (o["batch_size"] * procs))
        self.model.total_steps = max(1, int(steps_per_epoch * o["epochs"]))
        self.train_result = train(self.model, RowDataset(train_cols), RowDataset(val_cols), self._collate,
                                  config_from(o))
        self.model.eval()

    @torch.no_grad()
    def _score(self, prompts: list[str]) -> np.ndarray:
        if self.model is None:
            raise RouterError(f"{self.name} router has no model")
        self.model.eval()
        queries = self._queries(prompts)
        order = np.argsort([-len(q) for q in queries], kind="stable")   # similar lengths pad less
        out = np.zeros((len(prompts), len(self.candidates)), np.float32)
        step = self.opts["batch_size"]
        for start in range(0, len(prompts), step):
            idx = order[start:start + step]
            logits = self.model(self._collate([{"query": queries[i]} for i in idx]))["logits"]
            out[idx] = torch.sigmoid(logits.float()).numpy()
        return out

    # ---- persistence -------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                for k, v in self.model.state_dict().items()}

    def _extra(self) -> dict:
        extra = {"meta": self.meta}
        if self.train_result is not None:
            extra["training"] = self.train_result.to_json()
        return extra

    def _set_state(self, state: dict, extra: dict, directory: Path) -> None:
        self.meta = dict(extra.get("meta", {}))
        if not self.meta:
            raise RouterError(f"{directory}: the saved {self.name} router has no sequence plan (meta)")
        if self.opts["finetune"]:
            self._build(None, None, loading=True)
        else:
            self._build(state["encoder.proj.weight"].shape[1], state["encoder.vocab"], loading=True)
        missing, unexpected = self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                                         strict=False)
        if missing or unexpected:
            raise RouterError(f"{directory}: saved weights do not match the {self.name} model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.model.eval()


def _frequent_tokens(columns: dict, size: int) -> np.ndarray:
    """The ``size`` most frequent token ids among the training responses' kept tokens."""
    ids, lengths = columns["response_ids"], columns["response_len"]
    keep = np.arange(ids.shape[2]) < lengths[..., None]
    counts = Counter(ids[keep].tolist())
    return np.array(sorted(t for t, _ in counts.most_common(size)) or [0], dtype=np.int64)


for _name in ABLATIONS:
    register(_name, lambda _n=_name, **options: LookaheadRouter(_n, **options))
