"""The run's data (SPEC §4): the corpus, its split, the seeded batches and the seeded initial parameters."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.contract.spec import Task, param_shapes
from harness.errors import LoopbenchError

Arrays = dict[str, np.ndarray]
Batches = np.ndarray
"""(S, B, T+1) int64 windows, read-only."""

TRAIN_FRACTION = 0.9
EVAL_WINDOWS = 64
"""Fixed validation windows for the held-out loss: evenly spaced, independent of the seed."""


@dataclass(frozen=True)
class Corpus:
    """The tokens (bytes) of a UTF-8 text and its split (SPEC §4)."""

    name: str
    sha256: str
    tokens: np.ndarray  # (N,) uint8

    @property
    def n_train(self) -> int:
        return int(len(self.tokens) * TRAIN_FRACTION)

    @property
    def train(self) -> np.ndarray:
        return self.tokens[: self.n_train]

    @property
    def val(self) -> np.ndarray:
        return self.tokens[self.n_train :]


def default_text() -> str:
    """The text every CPython ships in pydoc_data.topics: all values joined in sorted key order."""
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def load_corpus(path: str | Path | None = None) -> Corpus:
    """The default corpus, or the UTF-8 text file at `path`."""
    if path is None:
        raw = default_text().encode("utf-8")
        name = "pydoc_data.topics"
    else:
        path = Path(path)
        if path.is_dir():
            raise LoopbenchError(f"corpus {path} is a folder: --corpus names one UTF-8 text file")
        if not path.is_file():
            raise LoopbenchError(f"corpus file not found: {path}")
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise LoopbenchError(f"cannot read the corpus {path}: {err.strerror or err}") from None
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise LoopbenchError(f"corpus {path} is not UTF-8 text (byte {err.start} is invalid)") from None
        if b"\x00" in raw:
            raise LoopbenchError(f"corpus {path} is not text (it holds NUL bytes)")
        name = str(path)
    tokens = np.frombuffer(raw, dtype=np.uint8).copy()
    return Corpus(name=name, sha256=hashlib.sha256(raw).hexdigest(), tokens=tokens)


def check_corpus_fits(corpus: Corpus, task: Task) -> None:
    """Both splits must hold at least one window of T+1 tokens."""
    need = task.ctx_len + 1
    if len(corpus.train) < need or len(corpus.val) < need:
        raise LoopbenchError(
            f"corpus {corpus.name} is too short: {len(corpus.tokens)} bytes give a training split of "
            f"{len(corpus.train)} and a validation split of {len(corpus.val)} tokens, "
            f"each needs at least one window of {need}"
        )


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    data_seq, param_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(data_seq), np.random.default_rng(param_seq)


def make_batches(corpus: Corpus, task: Task, seed: int) -> np.ndarray:
    """The run's batches: (S, B, T+1) int64 windows of the training split, drawn from the seed."""
    check_corpus_fits(corpus, task)
    rng, _ = _streams(seed)
    T = task.ctx_len
    train = corpus.train.astype(np.int64)
    starts = rng.integers(0, len(train) - T, size=(task.steps, task.batch_size))  # last start: len - (T+1)
    batches: np.ndarray = train[starts[..., None] + np.arange(T + 1)]
    batches.setflags(write=False)
    return batches


def init_params(task: Task, seed: int) -> Arrays:
    """The initial parameters of SPEC §2, float64, drawn from the seed in the table's order."""
    _, rng = _streams(seed)
    proj_std = 0.02 / math.sqrt(2 * task.n_layer)
    params: Arrays = {}
    for name, shape in param_shapes(task).items():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith(".g"):
            params[name] = np.ones(shape)
        elif len(shape) == 1:  # the biases, and the .b of each LayerNorm
            params[name] = np.zeros(shape)
        elif name.endswith(("proj.w", "fcproj.w")):
            params[name] = rng.normal(0.0, proj_std, size=shape)
        else:
            assert name in ("wte", "wpe") or leaf == "w", name
            params[name] = rng.normal(0.0, 0.02, size=shape)
    return params


def eval_windows(corpus: Corpus, task: Task) -> np.ndarray:
    """Fixed validation windows (EVAL_WINDOWS, T+1), evenly spaced over the validation split."""
    check_corpus_fits(corpus, task)
    T = task.ctx_len
    val = corpus.val.astype(np.int64)
    last = len(val) - (T + 1)
    starts = np.unique(np.linspace(0, last, EVAL_WINDOWS).round().astype(np.int64))
    windows: np.ndarray = val[starts[:, None] + np.arange(T + 1)]
    return windows
