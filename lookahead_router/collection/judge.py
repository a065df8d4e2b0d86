"""LLM-as-a-judge scores: MT-Bench's single-answer grading (FastChat's ``judge_prompts.jsonl``).

The judge sees the prompt ``single-v1`` (helpfulness, relevance, accuracy, ...) or, when the task
has a reference answer, ``single-math-v1`` (compare with the reference), and must end with a
rating "[[1-10]]". ``verify_mtbench`` checks both the templates and the rating parser against the
judgments shipped with the paper's release.

Calls go through ``openai.AsyncOpenAI``: at most ``concurrency`` requests in flight, and 429, 5xx,
connection errors and timeouts retried ``max_retries`` times with the client's exponential backoff.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from lookahead_router.collection.agreement import Agreement
from lookahead_router.collection.tasks import Score, Scorer, Task

SYSTEM_PROMPT = "You are a helpful assistant."
_INSTRUCTION = (
    "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
    "provided by an AI assistant to the user question displayed below. {criteria} Be as objective "
    "as possible. After providing your explanation, you must rate the response on a scale of 1 to "
    "10 by strictly following this format: \"[[rating]]\", for example: \"Rating: [[5]]\".\n\n")
SINGLE_V1 = _INSTRUCTION.format(criteria=(
    "Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, "
    "creativity, and level of detail of the response. Begin your evaluation by providing a short "
    "explanation.")) + (
    "[Question]\n{question}\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]")
SINGLE_MATH_V1 = _INSTRUCTION.format(criteria=(
    "Your evaluation should consider correctness and helpfulness. You will be given a reference "
    "answer and the assistant's answer. Begin your evaluation by comparing the assistant's answer "
    "with the reference answer. Identify and correct any mistakes.")) + (
    "[Question]\n{question}\n\n"
    "[The Start of Reference Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n"
    "[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]")
# MT-Bench categories judged against a reference answer (FastChat's NEED_REF_CATS).
NEED_REF_CATS = ("math", "reasoning", "coding")

_RATING = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_RATING_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def render_judge_prompt(question: str, answer: str, reference: Optional[str] = None) -> list[dict]:
    """The judge's messages: single-math-v1 when there is a reference answer, else single-v1.
    (str.format on the template only: braces inside question or answer are kept as they are.)"""
    if reference is None:
        user = SINGLE_V1.format(question=question, answer=answer)
    else:
        user = SINGLE_MATH_V1.format(question=question, answer=answer, ref_answer_1=reference)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_rating(judgment: str) -> Optional[float]:
    """The rating as FastChat reads it (the first "[[x]]", else the first "[x]"), or None when there
    is none or it lies outside 1-10 (FastChat would have recorded -1 / kept the stray value)."""
    match = _RATING.search(judgment or "") or _RATING_BACKUP.search(judgment or "")
    if not match:
        return None
    rating = float(match.group(1))
    return rating if 1.0 <= rating <= 10.0 else None


def _run_sync(make_coroutine):
    """``asyncio.run`` from synchronous code, also when this thread already runs an event loop
    (a notebook, an async server): then the coroutine runs on a fresh loop in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coroutine())
    with ThreadPoolExecutor(1) as helper:
        return helper.submit(lambda: asyncio.run(make_coroutine())).result()


class JudgeScorer(Scorer):
    """A 1-10 rating of each response by a judge LLM behind an OpenAI-compatible endpoint."""

    name = "judge"

    def __init__(self, base_url: str, model: str, api_key: Optional[str] = None, concurrency: int = 8,
                 max_retries: int = 5, timeout_s: float = 120, temperature: float = 0.0,
                 max_tokens: int = 2048):
        self.base_url, self.model, self.api_key = base_url, model, api_key
        self.concurrency, self.max_retries, self.timeout_s = concurrency, max_retries, timeout_s
        self.temperature, self.max_tokens = temperature, max_tokens

    def score(self, pairs: Sequence[tuple[Task, str]], progress: bool = True) -> list[Score]:
        return _run_sync(lambda: self._score_all(pairs, progress))

    async def _score_all(self, pairs: Sequence[tuple[Task, str]], progress: bool) -> list[Score]:
        from openai import AsyncOpenAI
        # One client per run: an AsyncOpenAI belongs to the event loop it was first used on.
        client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "EMPTY",
                             max_retries=self.max_retries, timeout=self.timeout_s)
        slots = asyncio.Semaphore(self.concurrency)
        with tqdm(total=len(pairs), desc=f"judge {self.model}", disable=not progress) as bar:
            async def one(task: Task, response: str) -> Score:
                async with slots:
                    score = await self._judge(client, task, response)
                bar.update(1)
                return score
            try:
                return list(await asyncio.gather(*(one(t, r) for t, r in pairs)))
            finally:
                await client.close()

    async def _judge(self, client, task: Task, response: str) -> Score:
        import openai
        messages = render_judge_prompt(task.prompt, response, task.reference)
        try:
            out = await client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature,
                max_tokens=self.max_tokens)
            text = out.choices[0].message.content or ""
        except openai.OpenAIError as exc:     # still failing after the client's retries
            return Score(None, detail=f"judge error: {type(exc).__name__}: {exc}", retry=True)
        rating = parse_rating(text)
        if rating is None:
            return Score(None, detail=f"unparsable judgment: {text[:200]}", extra={"judgment": text})
        return Score(rating, detail="", extra={"judgment": text})


# --- verification against the release ------------------------------------------------------------

_ANSWER = ("[The Start of Assistant's Answer]\n", "\n[The End of Assistant's Answer]")
_REFERENCE = ("[The Start of Reference Answer]\n", "\n[The End of Reference Answer]")


def _between(text: str, start: str, end: str) -> Optional[str]:
    i = text.find(start)
    j = text.rfind(end)
    return text[i + len(start):j] if 0 <= i and i + len(start) <= j else None


def _first_difference(ours: str, shipped: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(ours, shipped)) if a != b), min(len(ours), len(shipped)))
    return f"at char {at}: ours {ours[at:at + 60]!r} vs shipped {shipped[at:at + 60]!r}"


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _rating_rows(model: str, judgments: list[dict]) -> list[Agreement]:
    """parse_rating(judgment) against the shipped score for every judgment (both turns); and, when
    FastChat recorded -1 (no rating found), a row for those judgments alone: do we find none too?"""
    out = Agreement("MT-Bench", model, n=len(judgments), check=(
        "parse_rating == shipped score, both turns (-1 == None); ours: mean rating, None left out; "
        "shipped: mean score, -1 counted as the paper's Table 1 does"))
    ours = []
    for j in judgments:
        rating, score = parse_rating(j["judgment"]), float(j["score"])
        same = (rating is None) if score == -1 else (rating == score)
        out.agree += same
        ours += [] if rating is None else [rating]
        if not same:
            out.disagreements.append({
                "id": f"{j['question_id']}/turn{j['turn']}", "shipped": score, "ours": rating,
                "kind": "out-of-range rating" if _RATING.search(j["judgment"]) else "parser differs",
                "detail": j["judgment"][-200:]})
    out.ours = sum(ours) / max(len(ours), 1)
    out.shipped = sum(float(j["score"]) for j in judgments) / max(len(judgments), 1)
    failed = [(f"{j['question_id']}/turn{j['turn']}", False, parse_rating(j["judgment"]) is not None,
               "we found a rating", j["judgment"][-200:]) for j in judgments if float(j["score"]) == -1]
    return [out] + ([Agreement.from_pairs("MT-Bench", model, "shipped -1 (FastChat found no rating): "
                                          "parse_rating is None too (ours/shipped = % rated)", failed)]
                    if failed else [])


def _template_row(model: str, judgments: list[dict], questions: dict) -> Agreement:
    """render_judge_prompt(question, answer, reference) == the shipped user_prompt, turn 1."""
    rows = []
    for j in (j for j in judgments if j["turn"] == 1):
        q, prompt = questions[j["question_id"]], j["user_prompt"]
        answer = _between(prompt, *_ANSWER)
        # The reference the judge saw is GPT-4's written answer, only inside the shipped prompt.
        reference = _between(prompt.split(_ANSWER[0])[0], *_REFERENCE) \
            if q["category"] in NEED_REF_CATS else None
        if answer is None or (q["category"] in NEED_REF_CATS and reference is None):
            rows.append((f"{j['question_id']}/turn1", True, False, "answer/reference markers not found",
                         prompt[:200]))
            continue
        ours = render_judge_prompt(q["turns"][0], answer, reference)[1]["content"]
        rows.append((f"{j['question_id']}/turn1", True, ours == prompt, "template differs",
                     _first_difference(ours, prompt)))
    return Agreement.from_pairs("MT-Bench", model, "render_judge_prompt == shipped user_prompt (turn 1; "
                                "ours = % reproduced exactly)", rows)


def verify_mtbench(root: Path, candidates: Sequence[str]) -> list[Agreement]:
    """Per candidate: the rating parser against the shipped scores (plus a row for the judgments
    FastChat could not parse, where there are any), then the prompt templates against the shipped
    turn-1 judge prompts."""
    mt = Path(root) / "test" / "MT-Bench"
    questions = {q["question_id"]: q for q in _read_jsonl_gz(mt / "question.jsonl.gz")}
    rows = []
    for model in candidates:
        judgments = _read_jsonl_gz(mt / "judgments" / f"gpt-4-0125-preview_judge_{model}_single.jsonl.gz")
        rows += _rating_rows(model, judgments) + [_template_row(model, judgments, questions)]
    return rows
