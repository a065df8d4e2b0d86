"""Fetch the paper's released routing data over HTTPS into the layout `import-paper` reads.

The release is a folder of gzip files in a public repository; raw file hosts cannot list folders,
so the files are named here from the documented layout. Each file is streamed to a `.part` file,
checked to be a complete gzip stream, then renamed: an interrupted download leaves no file that
looks finished, and files already present and complete are skipped.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Sequence

import httpx
from tqdm import tqdm

from lookahead_router.data.release import PAPER_CANDIDATES, SELFOSS_FOLDER
from lookahead_router.errors import LookaheadError

DEFAULT_URL = "https://raw.githubusercontent.com/huangcb01/lookahead-routing/main/compressed_data/"


def release_files(candidates: Sequence[str] = PAPER_CANDIDATES) -> list[str]:
    """Relative paths of every file of the release for these candidates."""
    files = ["test/AlpacaEval/instructions.jsonl.gz", "test/ArenaHard/question.jsonl.gz",
             "test/MT-Bench/question.jsonl.gz",
             f"{SELFOSS_FOLDER}/instructions.jsonl.gz", f"{SELFOSS_FOLDER}/eval_ids.json.gz",
             "train/OpenMathInstruct2_filtered2/instructions.jsonl.gz",
             "train/OpenMathInstruct2_filtered2/eval_ids.json.gz", "train/UltraFeedback/eval_ids.json.gz"]
    for c in candidates:
        files += [
            f"test/AlpacaEval/{c}/model_outputs.json.gz",
            f"test/AlpacaEval/{c}/weighted_alpaca_eval_gpt4_turbo/annotations.json.gz",
            f"test/AlpacaEval/{c}/weighted_alpaca_eval_gpt4_turbo/leaderboard.csv.gz",
            f"test/ArenaHard/model_answer/{c}.jsonl.gz", f"test/ArenaHard/model_judgment/{c}.jsonl.gz",
            f"test/MT-Bench/judgments/gpt-4-0125-preview_judge_{c}_single.jsonl.gz",
            f"test/GSM8k/{c}.json.gz", f"test/MATH/{c}.json.gz",
            f"test/HumanEval/predictions/{c}.json.gz", f"test/HumanEval/results/{c}.json.gz",
            f"test/MBPP/predictions/{c}.json.gz", f"test/MBPP/results/{c}.json.gz",
            f"{SELFOSS_FOLDER}/responses/{c}.jsonl.gz",
        ]
    return files


class DownloadError(LookaheadError, RuntimeError):
    """A release file could not be fetched or arrived incomplete. (Still a RuntimeError, as it was
    before LookaheadError, for callers that catch that.)"""


def _complete_gzip(path: Path) -> bool:
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
        return True
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError):
        return False


def download_release(out: str | Path, url: str = DEFAULT_URL,
                     candidates: Sequence[str] = PAPER_CANDIDATES, timeout: float = 60.0,
                     progress: bool = True) -> list[Path]:
    """Download the release under ``out``; returns the paths written (skipped ones excluded)."""
    out = Path(out)
    base = url if url.endswith("/") else url + "/"
    written = []
    files = release_files(candidates)
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for rel in tqdm(files, desc="download", unit="file", disable=not progress):
            target = out / rel
            if target.is_file() and _complete_gzip(target):
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            try:
                with client.stream("GET", base + rel) as resp:
                    if resp.status_code != 200:
                        raise DownloadError(f"{base + rel}: HTTP {resp.status_code}")
                    with part.open("wb") as fh:
                        for chunk in resp.iter_bytes():
                            fh.write(chunk)
            except httpx.HTTPError as exc:
                part.unlink(missing_ok=True)
                raise DownloadError(f"{base + rel}: {exc}") from exc
            if not _complete_gzip(part):
                part.unlink()
                raise DownloadError(f"{base + rel}: arrived truncated (not a complete gzip stream)")
            os.replace(part, target)
            written.append(target)
    return written
