"""Reward-model scores: a sequence classifier with one output (e.g. Skywork-Reward,
ArmoRM-style heads, UltraFeedback's reward models) rates each (prompt, response) pair.

The pair is formatted with the tokenizer's chat template (a user turn, then the assistant turn)
when it has one — reward models are trained on their chat format — else as a text pair.
Sequences are truncated to ``max_length`` tokens (the start is kept) and batched in order of
length, so a batch carries little padding; scores come back in the input order.
"""

from __future__ import annotations

from typing import Optional, Sequence

from tqdm import tqdm

from lookahead_router.collection.tasks import Score, Scorer, Task
from lookahead_router.errors import LookaheadError


class RewardModelError(LookaheadError, RuntimeError):
    """The reward model cannot be loaded or used; the message names it. (Still a RuntimeError, as
    it was before LookaheadError, for callers that catch that.)"""


class RewardModelScorer(Scorer):
    """``Score(logit)`` of a one-output sequence classifier for every (prompt, response) pair."""

    name = "reward"

    def __init__(self, model: str, batch_size: int = 8, max_length: int = 2048,
                 device: Optional[str] = None, dtype=None):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        self.model_name, self.batch_size, self.max_length = model, batch_size, max_length
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForSequenceClassification.from_pretrained(model, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise RewardModelError(f"cannot load reward model {model!r}: {exc}") from exc
        self.model.to(self.device).eval()
        # Longer inputs would overflow an encoder's position table (BERT: 512).
        positions = getattr(self.model.config, "max_position_embeddings", None)
        self.max_length = min(max_length, positions or max_length)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:    # needed to find each row's last token
            self.model.config.pad_token_id = self.tokenizer.pad_token_id

    def _encode(self, prompt: str, response: str) -> list[int]:
        tok = self.tokenizer
        if tok.chat_template:
            ids = tok.apply_chat_template([{"role": "user", "content": prompt},
                                           {"role": "assistant", "content": response}], tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):   # newer transformers: a BatchEncoding
                ids = ids["input_ids"]
            return list(ids)[:self.max_length]
        return tok(prompt, response, truncation=True, max_length=self.max_length)["input_ids"]

    def score(self, pairs: Sequence[tuple[Task, str]], progress: bool = True) -> list[Score]:
        import torch
        encoded = [self._encode(task.prompt, response) for task, response in pairs]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        values: list[float] = [0.0] * len(encoded)
        with torch.inference_mode(), tqdm(total=len(encoded), desc=f"reward {self.model_name}",
                                          disable=not progress) as bar:
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = self.tokenizer.pad({"input_ids": [encoded[i] for i in rows]},
                                           return_tensors="pt").to(self.device)
                logits = self.model(**batch).logits.float()
                for i, value in zip(rows, logits[:, 0].tolist()):
                    values[i] = value
                bar.update(len(rows))
        return [Score(v) for v in values]
