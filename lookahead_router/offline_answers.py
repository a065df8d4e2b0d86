"""Answers made without a model, for demos and tests with no LLM server (``models.yaml``):

- replay (``replay: dataset.parquet``): the response the candidate gave to the same prompt in a
  routing dataset;
- echo (``echo: true``): any prompt, answered with ``[echo from <candidate>] <the last user
  message's first 8 words> ...``. Its usage counts whitespace-separated words, not tokens.

The proxy serves them as upstreams (``serving/offline_backends.py``) and `lookahead collect
generate` collects their responses; here, outside ``serving/``, so that collection needs no part
of the proxy.
"""

from __future__ import annotations

from pathlib import Path

from lookahead_router.catalogue import ConfigError, UpstreamConfig
from lookahead_router.errors import LookaheadError
from lookahead_router.prompts import PromptError, content_text, prompt_of
from lookahead_router.routers.cost import estimate_tokens

ECHO_WORDS = 8  # of the prompt, in an echo answer: enough to recognise it, short in a demo


class ReplayMiss(LookaheadError):
    """The prompt is not one the replayed dataset recorded."""


class NoRecordedResponse(LookaheadError):
    """The dataset has the prompt but not this candidate's response to it."""


class OfflineAnswers:
    """One candidate's answers: ``answer`` gives the text for a conversation, ``tokens`` counts a
    text's tokens (for the usage an OpenAI response reports)."""

    def __init__(self, name: str, config: UpstreamConfig):
        self.name, self.config = name, config

    def answer(self, messages: list) -> str:
        raise NotImplementedError

    def tokens(self, text: str) -> int:
        raise NotImplementedError

    def usage(self, messages: list, answer: str, n: int = 1) -> dict:
        """OpenAI's ``usage`` of ``n`` copies of ``answer`` to ``messages``."""
        prompt = 0
        for m in messages or []:
            try:
                prompt += self.tokens(content_text(m.get("content") or ""))
            except PromptError:
                pass
        completion = n * self.tokens(answer)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class ReplayAnswers(OfflineAnswers):
    """The response the candidate gave to the same prompt in a routing dataset (the last user
    message must equal a dataset prompt)."""

    _datasets: dict[Path, tuple[dict[str, int], list[str], object]] = {}

    def __init__(self, name: str, config: UpstreamConfig):
        from lookahead_router.data.dataset import RoutingDataset
        super().__init__(name, config)
        path = Path(config.replay)
        if path not in self._datasets:  # several candidates usually replay one file: load it once
            ds = RoutingDataset.load(path)
            index = {p: i for i, p in enumerate(ds.queries["prompt"])}
            self._datasets[path] = (index, list(ds.candidates), ds.responses)
        self.index, candidates, self.responses = self._datasets[path]
        replayed = config.model or name
        if replayed not in candidates:
            raise ConfigError(f"replay: {path} has no candidate {replayed!r} (it has {candidates})")
        self.column = candidates.index(replayed)

    def answer(self, messages: list) -> str:
        row = self.index.get(prompt_of(messages or []))
        if row is None:  # the client asked something the recording never saw
            raise ReplayMiss(f"{self.name} (replay backend): {self.config.replay} has no record of this "
                             "prompt; a replayed candidate answers only the dataset's prompts (echo: true "
                             "answers any)")
        answer = self.responses[row, self.column]
        if answer is None:  # this candidate's response is missing: another candidate may have one
            raise NoRecordedResponse("replay: no recorded response")
        return str(answer)

    def tokens(self, text: str) -> int:
        return estimate_tokens(text)


class EchoAnswers(OfflineAnswers):
    """Any prompt: ``[echo from <name>] <the last user message's first words> ...``."""

    def answer(self, messages: list) -> str:
        try:
            words = prompt_of(messages or []).split()
        except PromptError:  # a pass-through conversation without a user message
            words = []
        shown = " ".join(words[:ECHO_WORDS]) + (" ..." if len(words) > ECHO_WORDS else "")
        return f"[echo from {self.name}] {shown}".rstrip()

    def tokens(self, text: str) -> int:
        return len(text.split())


def offline_answers(name: str, config: UpstreamConfig) -> OfflineAnswers:
    return EchoAnswers(name, config) if config.echo else ReplayAnswers(name, config)
