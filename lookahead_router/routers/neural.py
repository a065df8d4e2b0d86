"""What the neural routers (the classifier baselines and Lookahead) share: typed options with
defaults, checks, the fit skeleton, batched scoring and saving only what was trained.

Every neural router reads the prompt with a ``Trunk`` (``routers/trunk.py``): with
``finetune=False`` (the ``cpu`` preset) the backbone's first layers are frozen and their states of
each prompt are cached on disk (``features.shared_extractor``), and its top ``layers`` layers are
trained; with ``finetune=True`` the whole backbone trains on token ids. Subclasses define the
model (``_build``) and any extra training columns (``_extra_columns``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import balanced_weights, binary_labels, metric_utility, normalised_scores
from lookahead_router.data.splits import validation_split
from lookahead_router.routers.backbones import (DEFAULT_BACKBONE, load_backbone, load_tokenizer, max_positions,
                                                num_layers)
from lookahead_router.routers.base import Router, RouterError
from lookahead_router.routers.config import NeuralConfig
from lookahead_router.routers.trunk import Trunk
from lookahead_router.training.engine import train


class RowDataset(torch.utils.data.Dataset):
    """Columns of equal length (arrays or lists) served as one dict per row."""

    def __init__(self, columns: dict[str, np.ndarray | list]):
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


class NeuralRouter(Router):
    """A router whose model trains through the shared engine on a ``Trunk`` of its backbone."""

    Config = NeuralConfig
    seeded = True
    neural = True

    def __init__(self, config=None, /, **options):
        super().__init__(config, **options)
        self.model: torch.nn.Module | None = None
        self.train_result = None
        self.plan: dict = {}     # lengths fixed at fit time (saved in router.json)

    # ---- inputs --------------------------------------------------------------------------
    @property
    def backbone(self) -> str:
        return self.config.backbone or DEFAULT_BACKBONE[self.kind]

    @property
    def tokenizer(self):
        return load_tokenizer(self.backbone, self.kind)

    def _plan(self) -> dict:
        """Lengths and the cached layer, from the backbone's config (no weights loaded)."""
        return {"query_length": min(self.config.max_length, max_positions(self.backbone, self.kind))}

    def _split(self) -> int:
        """The layer whose output states are cached (its top ``layers`` layers then train)."""
        if "split" not in self.plan:
            total = num_layers(self.backbone, self.kind)
            if not 1 <= self.config.layers <= total:
                raise RouterError(f"{self.name}: layers must lie in 1..{total} for backbone "
                                  f"{self.backbone!r}, got {self.config.layers}")
            self.plan["split"] = total - self.config.layers
        return self.plan["split"]

    def _queries(self, prompts: list[str]) -> list[np.ndarray]:
        """Per prompt: token ids (``finetune``) or the cached fp16 input states of the trunk."""
        length = self.plan["query_length"]
        if self.config.finetune:
            enc = self.tokenizer(prompts, truncation=True, max_length=length)
            return [np.asarray(ids, dtype=np.int64) for ids in enc["input_ids"]]
        extractor = self._extractor(self.backbone, self.kind, length, layer=self._split(),
                                    progress=self.config.train.progress)
        return extractor(prompts, desc=f"{self.name} prompt states")

    def _columns(self, ds: RoutingDataset, validation: bool = False) -> dict:
        """Training columns; a validation set also carries ``metric_utility``, whose mean over the
        chosen candidates is the average μn the report gives (the engine keeps the best step by it)."""
        ds = ds.select_candidates(self.candidates)
        c = self.config
        columns = {"query": self._queries(ds.queries["prompt"].tolist()),
                   "labels": binary_labels(ds, c.threshold, c.labels).astype(np.float32),
                   "utility": normalised_scores(ds).astype(np.float32), **self._extra_columns(ds)}
        if validation:
            columns["metric_utility"] = metric_utility(ds).astype(np.float32)
        elif c.balance == "sources":
            columns["weight"] = balanced_weights(ds).astype(np.float32)
        return columns

    def _extra_columns(self, ds: RoutingDataset) -> dict:
        return {}

    def _collate(self, rows: list[dict]) -> dict:
        """Prompts left-padded to the batch's longest, so whatever follows them starts at one index."""
        queries = [torch.from_numpy(np.asarray(r["query"])) for r in rows]
        floating = queries[0].is_floating_point()
        pad = 0.0 if floating else float(self.tokenizer.pad_token_id or 0)
        query = torch.nn.utils.rnn.pad_sequence(queries, batch_first=True, padding_value=pad, padding_side="left")
        batch = {"query": query.float() if floating else query,   # fp16 on disk: fp32 arithmetic on CPUs
                 "query_len": torch.tensor([len(q) for q in queries])}
        for key in rows[0]:
            if key != "query":
                batch[key] = torch.from_numpy(np.stack([np.asarray(r[key]) for r in rows]))
        return batch

    # ---- model ---------------------------------------------------------------------------
    def _trunk(self, n_extra: int = 0, reconstruct: bool = False) -> Trunk:
        c = self.config
        return Trunk(load_backbone(self.backbone, self.kind), c.layers, n_extra, reconstruct, c.finetune)

    def _build(self) -> torch.nn.Module:
        raise NotImplementedError

    def _before_training(self, n_rows: int) -> None:
        """Hook: what the model needs to know about the run (e.g. the curriculum's length)."""

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    # ---- contract ------------------------------------------------------------------------
    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        c = self.config
        if validation is None:
            ds, validation = validation_split(ds, c.val_fraction, c.train.seed)
        torch.manual_seed(c.train.seed)
        self.plan = self._plan()
        train_cols, val_cols = self._columns(ds), self._columns(validation, validation=True)
        self.model = self._build()
        self._before_training(len(ds))
        self.train_result = train(self.model, RowDataset(train_cols), RowDataset(val_cols), self._collate,
                                  c.train)
        self.model.eval()

    @torch.no_grad()
    def _score(self, prompts: list[str]) -> np.ndarray:
        if self.model is None:
            raise RouterError(f"{self.name} router has no model")
        self.model.eval()
        queries = self._queries(prompts)
        return self._score_columns({"query": queries})

    @torch.no_grad()
    def _score_columns(self, columns: dict) -> np.ndarray:
        """Batched scoring of prepared columns, batches of similar prompt lengths (less padding)."""
        queries = columns["query"]
        order = np.argsort([-len(q) for q in queries], kind="stable")
        out = np.zeros((len(queries), len(self.candidates)), np.float32)
        step = self.config.train.batch_size
        for start in range(0, len(queries), step):
            idx = order[start:start + step]
            batch = self._collate([{k: v[i] for k, v in columns.items()} for i in idx])
            out[idx] = self.probabilities(self.model(batch)["logits"].float()).numpy()
        return out

    # ---- persistence: what trained goes to safetensors; the frozen backbone is re-read ----
    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().float().cpu().numpy() if v.is_floating_point() else v.cpu().numpy()
                for k, v in self.model.state_dict().items()}

    def _extra(self) -> dict:
        extra = {"plan": self.plan}
        if self.train_result is not None:
            extra["training"] = self.train_result.to_json()
        return extra

    def _set_state(self, state: dict, extra: dict, directory: Path) -> None:
        self.plan = dict(extra.get("plan", {}))
        if "query_length" not in self.plan:
            raise RouterError(f"{directory}: the saved {self.name} router has no sequence plan")
        self.model = self._build()
        missing, unexpected = self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                                         strict=False)
        if missing or unexpected:
            raise RouterError(f"{directory}: saved weights do not match the {self.name} model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.model.eval()

