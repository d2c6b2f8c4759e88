"""Tasks: seeded generators of training sequences and of evaluation sets.

Every task writes sequences in one format, over one vocabulary shared by all tasks::

    [TAG  prompt...  SEP  answer...]          e.g. reverse, length 4:
    <t:reverse> s3 s1 s4 s1 <sep> s1 s4 s1 s3

The loss (and exact-match accuracy) covers only the answer tokens. The tag tells the model
which task a sequence belongs to (Allen-Zhu & Li 3.3: a domain token in front of the data
protects capacity; every task has one, so the comparison between tasks stays fair).

Held-out inputs: copy / reverse / sort evaluate on random inputs that training rejects;
modadd / compare hold out a fixed share of the (a, b) pairs; datasets hold out a share of
the distinct prompts. Facts are memorised, so they are evaluated on the facts themselves, as
is a dataset with ``eval: train`` (``scored_on`` says which a task is).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from optimix.core.config import (
    ArithmeticTask,
    DatasetTask,
    FactsTask,
    SequenceTask,
    SpaceError,
    TrialConfig,
    short_repr,
)
from optimix.core.data_paths import sniff_builder
from optimix.core.task_specs import TextTask
from optimix.trial import hub
from optimix.trial.text_task import load_local, read_lines, split_lines, text_rows, train_bpe

log = logging.getLogger(__name__)

PAD, SEP, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<sep>", "<eos>")
IGNORE = -100  # label value that the loss skips (transformers' convention)


# ---------------------------------------------------------------------------------------------
# Vocabulary


@dataclass(frozen=True)
class Vocab:
    """Specials, one tag per task, ``n_symbols`` shared symbols ``s0..``, dataset characters."""

    task_names: tuple[str, ...]
    n_symbols: int
    chars: tuple[str, ...] = ()
    pieces: tuple[str, ...] = ()
    """Text tasks' BPE pieces, after every other token (``optimix.trial.text_task``)."""
    bpe: str = field(default="", repr=False)
    """The BPE (``tokenizers`` JSON) that maps text to these ids, when there are pieces."""

    @property
    def tokens(self) -> list[str]:
        return (
            list(SPECIALS)
            + [f"<t:{name}>" for name in self.task_names]
            + [f"s{i}" for i in range(self.n_symbols)]
            + [f"<c:{ord(c):x}>" for c in self.chars]
            + list(self.pieces)
        )

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.task_names) + self.n_symbols + len(self.chars) + len(self.pieces)

    def tag(self, task: str) -> int:
        return len(SPECIALS) + self.task_names.index(task)

    @property
    def symbol0(self) -> int:
        return len(SPECIALS) + len(self.task_names)

    @property
    def char0(self) -> int:
        return self.symbol0 + self.n_symbols

    def decode(self, ids) -> str:
        tokens = self.tokens
        return " ".join(tokens[int(i)] for i in ids if int(i) != PAD)

    def to_hf_tokenizer(self):
        """A ``PreTrainedTokenizerFast`` over these tokens (space-separated), for saved models."""
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        if self.bpe:  # text tasks: the BPE, whose first ids are the tokens below
            return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(self.bpe), pad_token="<pad>",
                                           sep_token="<sep>", eos_token="<eos>")
        vocab = {token: i for i, token in enumerate(self.tokens)}
        core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
        core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        return PreTrainedTokenizerFast(
            tokenizer_object=core, pad_token="<pad>", sep_token="<sep>", eos_token="<eos>"
        )


# ---------------------------------------------------------------------------------------------
# Tasks


@dataclass
class Task:
    """A task's generator. ``sample(rng, n)`` gives training rows; ``eval_ids`` is the evaluation set
    (inputs held out of training, or for ``facts`` the trained facts themselves).

    Rows are ``int64`` token ids of width ``width``; ``mask`` marks the answer tokens.
    """

    name: str
    kind: str
    width: int
    eval_ids: np.ndarray
    eval_mask: np.ndarray
    _sample: object = field(repr=False)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self._sample(rng, n)  # type: ignore[operator]


@dataclass
class TaskSet:
    vocab: Vocab
    tasks: dict[str, Task]
    weights: dict[str, float]
    seq_len: int


def build_tasks(config: TrialConfig) -> TaskSet:
    """Build every task of a config with its vocabulary. Same config and seed, same data."""
    seed = config.seed
    names = tuple(config.tasks)
    tables = {
        name: _load_table(name, spec) for name, spec in config.tasks.items() if isinstance(spec, DatasetTask)
    }
    chars = sorted({c for prompts, answers in tables.values() for text in (*prompts, *answers) for c in text})
    vocab = Vocab(names, max(_symbols_needed(spec) for spec in config.tasks.values()), tuple(chars))
    vocab, texts = _with_text(config, vocab)
    tasks = {}
    for name, spec in config.tasks.items():
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        if name in texts:
            tasks[name] = Task(name, spec.kind, *text_rows(spec, vocab.tag(name), PAD, *texts[name], rng,
                                                             config.eval.size))
        elif isinstance(spec, SequenceTask):
            tasks[name] = _sequence_task(name, spec, vocab, rng, config.eval.size)
        elif isinstance(spec, FactsTask):
            tasks[name] = _facts_task(name, spec, vocab, rng, config.eval.size)
        elif isinstance(spec, ArithmeticTask):
            tasks[name] = _arithmetic_task(name, spec, vocab, rng, config.eval.size)
        else:
            tasks[name] = _dataset_task(name, spec, vocab, rng, config.eval.size, *tables[name])
    seq_len = max(task.width for task in tasks.values())
    bulk = config.mixture.weights or {}
    weights = {name: bulk.get(name, spec.weight) for name, spec in config.tasks.items()}
    return TaskSet(vocab=vocab, tasks=tasks, weights=weights, seq_len=seq_len)


_CACHE: dict[str, TaskSet] = {}
_CACHE_SIZE = 8
TASK_FIELDS = {"tasks", "eval", "seed"}  # what a trial's task data depends on


def cached_tasks(config: TrialConfig) -> TaskSet:
    """``build_tasks`` once per (tasks, eval size, seed): trials of one search share the data.

    Task data depends only on these fields, never on the mixture or model, so every trial
    of a search that varies those reuses one ``TaskSet`` in a reused worker.
    """
    key = config.model_dump_json(include=TASK_FIELDS)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = build_tasks(config)
    return _CACHE[key]


def _with_text(config: TrialConfig, vocab: Vocab) -> tuple[Vocab, dict[str, tuple]]:
    """The vocabulary with the text tasks' BPE pieces, and per text task (tokenizer, training
    lines, held-out lines): one BPE over every text task's training lines."""
    texts = {name: spec for name, spec in config.tasks.items() if isinstance(spec, TextTask)}
    if not texts:
        return vocab, {}
    splits = {name: split_lines(read_lines(name, spec), spec, np.random.default_rng(
        [config.seed, zlib.crc32(name.encode()), 1])) for name, spec in texts.items()}
    specials = vocab.tokens
    tok = train_bpe([line for train, _ in splits.values() for line in train], specials,
                    max(spec.vocab_size for spec in texts.values()))
    pieces = tuple(tok.id_to_token(i) for i in range(len(specials), tok.get_vocab_size()))
    vocab = Vocab(vocab.task_names, vocab.n_symbols, vocab.chars, pieces, tok.to_str())
    return vocab, {name: (tok, *splits[name]) for name in texts}


def _symbols_needed(spec) -> int:
    if isinstance(spec, SequenceTask | FactsTask):
        return spec.alphabet
    if isinstance(spec, ArithmeticTask):
        return spec.p
    return 0


def row_hash(rows: np.ndarray) -> np.ndarray:
    """A 64-bit polynomial hash per row. Collisions only make training reject an extra input."""
    h = np.zeros(len(rows), dtype=np.uint64)
    for column in rows.T.astype(np.uint64):
        h = h * np.uint64(1_000_003) + column + np.uint64(1)
    return h


def _frame(tag: int, prompt: np.ndarray, answer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[TAG prompt SEP answer]`` rows and the mask of the answer positions."""
    n = len(prompt)
    ids = np.concatenate(
        [np.full((n, 1), tag), prompt, np.full((n, 1), SEP), answer], axis=1
    ).astype(np.int64)
    mask = np.zeros(ids.shape, dtype=bool)
    mask[:, ids.shape[1] - answer.shape[1] :] = True
    return ids, mask


def scored_on(spec) -> str:
    """What a task's accuracy measures: ``held-out`` inputs (a rule or a skill) or ``trained``
    items (memorisation: ``facts``, and a ``dataset`` with ``eval: train``)."""
    return "trained" if spec.kind == "facts" or getattr(spec, "eval", "heldout") == "train" else "held-out"


def shift_targets(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Targets aligned with the logits: position t predicts token t+1 where it is an answer."""
    targets = np.full(ids.shape, IGNORE, dtype=np.int64)
    targets[:, :-1] = np.where(mask[:, 1:], ids[:, 1:], IGNORE)
    return targets


# copy / reverse / sort -----------------------------------------------------------------------


def _sequence_task(name, spec: SequenceTask, vocab: Vocab, rng, eval_size) -> Task:
    transform = {"copy": lambda x: x, "reverse": lambda x: x[:, ::-1], "sort": np.sort}[spec.kind]
    n_inputs = float(spec.alphabet) ** spec.length
    n_eval = int(min(eval_size, n_inputs // 2))
    if n_eval < 1:
        raise SpaceError(f"tasks.{name}.alphabet: alphabet**length is too small to hold out inputs")
    held = _distinct_rows(rng, n_eval, spec.length, spec.alphabet)
    held_hashes = np.sort(row_hash(held))
    tag = vocab.tag(name)

    def encode(x):
        return _frame(tag, x + vocab.symbol0, transform(x) + vocab.symbol0)

    def sample(rng, n):
        x = rng.integers(0, spec.alphabet, size=(n, spec.length))
        while True:  # reject held-out inputs; at most half the input space is held out
            bad = _isin_sorted(row_hash(x), held_hashes)
            if not bad.any():
                break
            x[bad] = rng.integers(0, spec.alphabet, size=(int(bad.sum()), spec.length))
        return encode(x)

    ids, mask = encode(held)
    return Task(name, spec.kind, ids.shape[1], ids, mask, sample)


def _distinct_rows(rng, n: int, width: int, alphabet: int) -> np.ndarray:
    rows = np.empty((0, width), dtype=np.int64)
    while len(rows) < n:
        more = rng.integers(0, alphabet, size=(2 * (n - len(rows)) + 8, width))
        rows = np.concatenate([rows, more])
        _, first = np.unique(row_hash(rows), return_index=True)
        rows = rows[np.sort(first)]
    return rows[:n]


def _isin_sorted(values: np.ndarray, sorted_pool: np.ndarray) -> np.ndarray:
    at = np.searchsorted(sorted_pool, values).clip(0, max(len(sorted_pool) - 1, 0))
    return sorted_pool[at] == values if len(sorted_pool) else np.zeros(len(values), bool)


# facts -------------------------------------------------------------------------------------


def _facts_task(name, spec: FactsTask, vocab: Vocab, rng, eval_size) -> Task:
    if float(spec.alphabet) ** spec.key_len < 2 * spec.n_facts:
        raise SpaceError(f"tasks.{name}.n_facts: {spec.n_facts} distinct keys do not fit in alphabet**key_len")
    keys = _distinct_rows(rng, spec.n_facts, spec.key_len, spec.alphabet) + vocab.symbol0
    values = rng.integers(0, spec.alphabet, size=(spec.n_facts, spec.value_len)) + vocab.symbol0
    # Zipf over facts (keys are random, so rank order carries no other structure).
    weights = np.arange(1, spec.n_facts + 1, dtype=np.float64) ** -spec.zipf
    cdf = np.cumsum(weights / weights.sum())
    tag = vocab.tag(name)

    def sample(rng, n):
        which = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right").clip(0, spec.n_facts - 1)
        if spec.values == "fresh":  # drawn only then: a fixed task's stream is as it was
            return _frame(tag, keys[which], rng.integers(0, spec.alphabet, size=(n, spec.value_len)) + vocab.symbol0)
        return _frame(tag, keys[which], values[which])

    shown = np.sort(rng.choice(spec.n_facts, size=min(eval_size, spec.n_facts), replace=False))
    ids, mask = _frame(tag, keys[shown], values[shown])
    return Task(name, spec.kind, ids.shape[1], ids, mask, sample)


# modadd / compare ------------------------------------------------------------------------------


def _arithmetic_task(name, spec: ArithmeticTask, vocab: Vocab, rng, eval_size) -> Task:
    p = spec.p
    pairs = np.stack(np.meshgrid(np.arange(p), np.arange(p), indexing="ij"), -1).reshape(-1, 2)
    order = rng.permutation(len(pairs))
    n_held = max(1, int(round(spec.eval_fraction * len(pairs))))
    if spec.heldout == "unordered":  # (b, a) goes wherever (a, b) goes
        key = np.minimum(pairs[:, 0], pairs[:, 1]) * p + np.maximum(pairs[:, 0], pairs[:, 1])
        drawn = key[order]
        _, first = np.unique(drawn, return_index=True)
        groups = drawn[np.sort(first)]  # unordered pairs, in the order first drawn
        sizes = np.where(groups // p == groups % p, 1, 2)  # (a, a) has no mirror
        is_held = np.isin(key, groups[: int(np.searchsorted(np.cumsum(sizes), n_held)) + 1])
        held, train = pairs[is_held], pairs[~is_held]
    else:
        held, train = pairs[order[:n_held]], pairs[order[n_held:]]
    if spec.kind == "modadd":
        def label(ab):
            return (ab[:, :1] + ab[:, 1:]) % p
    else:
        def label(ab):
            return (ab[:, :1] < ab[:, 1:]).astype(np.int64)
    tag = vocab.tag(name)

    def encode(ab):
        return _frame(tag, ab + vocab.symbol0, label(ab) + vocab.symbol0)

    def sample(rng, n):
        return encode(train[rng.integers(0, len(train), size=n)])

    shown = held[np.sort(rng.choice(len(held), size=min(eval_size, len(held)), replace=False))]
    ids, mask = encode(shown)
    return Task(name, spec.kind, ids.shape[1], ids, mask, sample)


# datasets --------------------------------------------------------------------------------------


def _load_table(name: str, spec: DatasetTask) -> tuple[list[str], list[str]]:
    """Prompt and answer columns through ``datasets`` (local JSON/CSV/Parquet, or a hub name)."""
    try:
        return _read_table(spec)
    except SpaceError as err:
        raise SpaceError(f"tasks.{name}.{err}") from None
    except Exception as err:  # a corrupt file, an unreachable hub: name the task, one line
        text = str(err).strip().splitlines()
        raise SpaceError(f"tasks.{name}.path: cannot load {spec.path!r}: "
                         f"{type(err).__name__}: {text[0][:200] if text else ''}") from None


def _read_table(spec: DatasetTask) -> tuple[list[str], list[str]]:
    import datasets

    path = Path(spec.path)
    builder = _BUILDERS.get(path.suffix.lower())  # a local file by its suffix, else a hub name
    if path.is_absolute():  # local whatever its suffix: the space makes local paths absolute
        if not path.exists():
            raise SpaceError(f"path: no such file or folder {spec.path!r}")
        builder = None if path.is_dir() else builder or sniff_builder(path)
    datasets.disable_progress_bars()
    if builder:
        table = load_local(builder, spec.path)
    elif snapshot := hub.local_copy(spec.path, spec.revision, spec.split):  # a search's copy of a hub dataset
        table = load_local("parquet", snapshot)
    else:  # a folder of data files, or a hub name (at the commit ``hub.pin_config`` resolved)
        table = hub.load(spec.path, spec.revision, spec.split)
    for field_name, column in (("prompt_column", spec.prompt_column), ("answer_column", spec.answer_column)):
        if column not in table.column_names:
            raise SpaceError(f"{field_name}: no column {column!r} in {spec.path} "
                             f"(columns: {', '.join(table.column_names)})")
    if spec.max_rows:
        table = table.select(range(min(spec.max_rows, len(table))))
    prompts = _cells(spec, "prompt_column", table[spec.prompt_column])
    answers = _cells(spec, "answer_column", table[spec.answer_column])
    keep = [i for i, (p, a) in enumerate(zip(prompts, answers, strict=True))
            if len(p) <= spec.max_chars and len(a) <= spec.max_chars]
    if len(keep) < len(prompts):
        distinct = len({prompts[i] for i in keep})
        if distinct < 2:  # said here: "needs 2 distinct prompts" would hide why
            raise SpaceError(f"max_chars: {spec.max_chars} leaves {len(keep)} of {len(prompts)} rows of "
                             f"{spec.path} ({distinct} distinct prompts); a dataset task needs 2 or more: "
                             "raise max_chars")
        log.warning("%s: %d rows longer than max_chars=%d left out", spec.path,
                    len(prompts) - len(keep), spec.max_chars)
    return [prompts[i] for i in keep], [answers[i] for i in keep]


def _cells(spec: DatasetTask, field_name: str, column: list) -> list[str]:
    """A column's cells as text; a null, NaN (an empty CSV cell), empty or non-scalar one is
    refused naming its row (1: the first data row), not trained as the text ``"None"``."""
    for row, cell in enumerate(column, start=1):
        if not isinstance(cell, str | int | float) or cell != cell or cell in ("", float("inf"), float("-inf")):
            what = field_name.removesuffix("_column")
            raise SpaceError(f"{field_name}: {spec.path} row {row} has no {what} "
                             f"({'null' if cell is None else short_repr(cell)})")
    return [str(cell) for cell in column]


_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


def _dataset_task(name, spec: DatasetTask, vocab: Vocab, rng, eval_size, prompts, answers) -> Task:
    distinct = sorted(set(prompts))
    if len(distinct) < 2:
        raise SpaceError(f"tasks.{name}.path: needs at least 2 distinct prompts")
    if spec.eval == "train":  # memorisation: trained on every row, scored on them
        train_rows = eval_rows = list(range(len(prompts)))
    else:
        order = rng.permutation(len(distinct))
        n_held = min(len(distinct) - 1, max(1, int(round(spec.eval_fraction * len(distinct)))))
        held = {distinct[i] for i in order[:n_held]}
        train_rows = [i for i, p in enumerate(prompts) if p not in held]
        eval_rows = [i for i, p in enumerate(prompts) if p in held]
    lookup = {c: vocab.char0 + i for i, c in enumerate(vocab.chars)}
    width = 2 + max(len(p) for p in prompts) + max(len(a) for a in answers) + 1
    tag = vocab.tag(name)

    def encode(rows):
        ids = np.full((len(rows), width), PAD, dtype=np.int64)
        mask = np.zeros(ids.shape, dtype=bool)
        for r, i in enumerate(rows):
            answer = [lookup[c] for c in answers[i]] + [EOS]
            seq = [tag, *(lookup[c] for c in prompts[i]), SEP, *answer]
            ids[r, : len(seq)] = seq
            mask[r, len(seq) - len(answer) : len(seq)] = True
        return ids, mask

    encoded_ids, encoded_mask = encode(train_rows)

    def sample(rng, n):
        pick = rng.integers(0, len(train_rows), size=n)
        return encoded_ids[pick], encoded_mask[pick]

    shown = sorted(rng.choice(len(eval_rows), size=min(eval_size, len(eval_rows)), replace=False))
    ids, mask = encode([eval_rows[i] for i in shown])
    return Task(name, spec.kind, width, ids, mask, sample)
