"""``kind: text``: real text from a local corpus, tokenised by a BPE trained on it.

The corpus is read through ``datasets`` (a ``.txt`` file by lines; JSON, CSV or Parquet by a
column), non-empty lines only. A seeded share of the lines is held out. One byte-level BPE is
trained (``tokenizers``) on the training lines of every text task of a config, with
optimix's own tokens (specials, task tags, symbols, dataset characters) as its first ids, so
its ids are the model's: the pieces it learns follow them in the shared vocabulary, and the
tokenizer saved with a model encodes text straight into the ids the model was trained on.
A sequence is ``[TAG t1 .. tn]`` (at most ``max_tokens`` pieces), every piece scored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from optimix.core.config import SpaceError, short_repr
from optimix.core.task_specs import TextTask

_BUILDERS = {".txt": "text", ".text": "text", ".json": "json", ".jsonl": "json", ".csv": "csv",
             ".parquet": "parquet"}


def load_local(builder: str, path: str):
    """A local file through ``datasets``, its own logging quiet while it loads: a file it cannot
    read is said once, in one line, by the caller (datasets 2.x logs the failure first, with a
    traceback of its logging)."""
    import datasets

    datasets.disable_progress_bars()
    was = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        return datasets.load_dataset(builder, data_files=path, split="train")
    finally:
        datasets.logging.set_verbosity(was)


def read_lines(name: str, spec: TextTask) -> list[str]:
    """The corpus's non-empty lines (``max_rows`` at most); ``SpaceError`` names the key."""
    path = Path(spec.path)
    if not path.exists():
        raise SpaceError(f"tasks.{name}.path: no such file {spec.path!r} (a text task reads a local corpus)")
    builder = _BUILDERS.get(path.suffix.lower(), "text")
    try:
        table = load_local(builder, str(path))
    except Exception as err:  # a corrupt file: name the task, one line
        raise SpaceError(f"tasks.{name}.path: cannot load {spec.path!r}: {type(err).__name__}") from None
    if spec.column not in table.column_names:
        raise SpaceError(f"tasks.{name}.column: no column {spec.column!r} in {spec.path} "
                         f"(columns: {', '.join(table.column_names)})")
    lines = []
    for row, text in enumerate(table[spec.column], start=1):
        if not isinstance(text, str):  # a null would be trained as the text "None"
            raise SpaceError(f"tasks.{name}.column: {spec.path} row {row} is not text ({short_repr(text)})")
        if text.strip():
            lines.append(text.strip())
    lines = lines[: spec.max_rows]
    if len(lines) < 2:
        raise SpaceError(f"tasks.{name}.path: needs at least 2 non-empty lines")
    return lines


def split_lines(lines: list[str], spec: TextTask, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """(training lines, held-out lines): a seeded ``eval_fraction`` of the lines held out."""
    order = rng.permutation(len(lines))
    n_held = min(len(lines) - 1, max(1, round(spec.eval_fraction * len(lines))))
    held = set(order[:n_held].tolist())
    return ([line for i, line in enumerate(lines) if i not in held],
            [line for i, line in enumerate(lines) if i in held])


BPE_RUN = 256
"""The longest run of non-space (or of space) characters BPE training reads whole: a longer
run is cut into pieces of this many characters. BPE merges inside one pre-token (a word), and
the cost of learning them grows with the square of its length: a 5 MB line with no space
would take hours. A word of up to ``BPE_RUN`` characters is read as it is, so a corpus
without such runs trains the same tokenizer; encoding is not cut."""

_LONG_RUN = re.compile(rf"\S{{{BPE_RUN + 1},}}|\s{{{BPE_RUN + 1},}}")


def bpe_pieces(line: str) -> Iterator[str]:
    """``line`` as BPE training reads it: whole, or cut inside its runs longer than ``BPE_RUN``."""
    start = 0
    for run in _LONG_RUN.finditer(line):
        for cut in range(run.start() + BPE_RUN, run.end(), BPE_RUN):
            yield line[start:cut]
            start = cut
    yield line[start:]


def train_bpe(corpus: list[str], specials: list[str], vocab_size: int):
    """A byte-level BPE over ``corpus`` whose first ids are ``specials``, in order; its cost
    near-linear in the corpus's size (``BPE_RUN``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=len(specials) + vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator((piece for line in corpus for piece in bpe_pieces(line)), trainer)
    if [tok.token_to_id(t) for t in specials] != list(range(len(specials))):
        raise RuntimeError("the BPE did not give optimix's tokens their ids")  # a tokenizers change
    return tok


def text_rows(spec: TextTask, tag: int, pad: int, tok, train: list[str], held: list[str],
              rng: np.random.Generator, eval_size: int):
    """(width, evaluation ids, evaluation mask, ``sample``): training rows drawn from ``train``,
    the evaluation set from ``held`` (``optimix.trial.tasks`` makes them a ``Task``)."""
    width = 1 + spec.max_tokens

    def encode(lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(lines), width), pad, dtype=np.int64)
        mask = np.zeros(ids.shape, dtype=bool)
        for r, encoding in enumerate(tok.encode_batch(lines)):
            pieces = encoding.ids[: spec.max_tokens]
            ids[r, 0] = tag
            ids[r, 1: 1 + len(pieces)] = pieces
            mask[r, 1: 1 + len(pieces)] = True
        return ids, mask

    rows, rows_mask = encode(train)

    def sample(rng, n):
        pick = rng.integers(0, len(rows), size=n)
        return rows[pick], rows_mask[pick]

    shown = sorted(rng.choice(len(held), size=min(eval_size, len(held)), replace=False).tolist())
    ids, mask = encode([held[i] for i in shown])
    return width, ids, mask, sample
