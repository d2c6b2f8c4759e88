"""The task specs of a search space's ``tasks`` section: one class per ``kind``."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import Field

from optimix.core.config_base import StrictModel


class SequenceTask(StrictModel):
    """copy / reverse / sort: ``[TAG x1..xL SEP y1..yL]`` over ``alphabet`` symbols."""

    kind: Literal["copy", "reverse", "sort"]
    weight: float = Field(1.0, ge=0)
    length: int = Field(6, ge=1, le=64)
    alphabet: int = Field(16, ge=2, le=1024)


class FactsTask(StrictModel):
    """Key -> value facts (Gu et al. style fact recall; with ``zipf > 0`` a background).

    ``n_facts`` random keys of ``key_len`` symbols, each mapped to ``value_len`` symbols.
    Training samples facts with probability proportional to ``rank ** -zipf``: with
    ``zipf = 1`` and thousands of facts the tail is never exhausted, so the task keeps
    competing for capacity (a non-saturating background). Evaluation is recall of the
    facts themselves (memorisation has no held-out inputs), on a uniform sample.

    ``values: fresh`` draws each training sequence's value afresh: the same keys and share of
    the training, all gradient and nothing a model can store (a background that interferes
    but cannot be memorised; its recall stays at chance, 1 / alphabet ** value_len).
    """

    kind: Literal["facts"]
    weight: float = Field(1.0, ge=0)
    n_facts: int = Field(100, ge=1, le=10_000_000)
    key_len: int = Field(3, ge=1, le=16)
    value_len: int = Field(2, ge=1, le=16)
    alphabet: int = Field(64, ge=2, le=1024)
    zipf: float = Field(0.0, ge=0)
    values: Literal["fixed", "fresh"] = "fixed"


class ArithmeticTask(StrictModel):
    """The study's injected tasks as ``[TAG a b SEP label]`` (modadd: (a+b) mod p; compare: a<b).

    A fixed ``eval_fraction`` of the (a, b) pairs is held out and never trained on.
    ``heldout: unordered`` holds out (b, a) with every held-out (a, b), so that a model
    cannot answer a held-out pair from its trained mirror (modadd commutes; compare's
    answer for (b, a) gives (a, b)'s); ``ordered`` (the default) holds out ordered pairs.
    """

    kind: Literal["modadd", "compare"]
    weight: float = Field(1.0, ge=0)
    p: int = Field(23, ge=2, le=1024)
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    heldout: Literal["ordered", "unordered"] = "ordered"


class DatasetTask(StrictModel):
    """Prompt/answer rows from ``datasets``: a local file (JSON/CSV/Parquet, by its suffix or
    its first bytes) or folder of data files, or a hub name. A path that exists is local;
    loading makes it absolute (``_check_files``).

    Text is tokenised by characters. ``eval: heldout`` (the default) holds out a share of the
    distinct prompts: rows whose prompt occurs in the held-out part are removed from training,
    so evaluation shares no input with training. ``eval: train`` scores the training rows
    themselves (memorisation: a user's own facts, catalogue or API names), and says so.

    ``revision`` (a hub dataset only: a branch, tag or commit) is what a search pins; it
    resolves it to a commit, records that here and reads one snapshot (``optimix.trial.hub``).
    """

    kind: Literal["dataset"]
    weight: float = Field(1.0, ge=0)
    path: str
    prompt_column: str = "prompt"
    answer_column: str = "answer"
    split: str = "train"
    revision: str | None = Field(None, min_length=1)
    eval: Literal["heldout", "train"] = "heldout"
    eval_fraction: float = Field(0.2, gt=0, lt=1)
    max_rows: int | None = Field(None, ge=2)
    max_chars: int = Field(64, ge=1, le=1024)


class TextTask(StrictModel):
    """Real text from a local corpus, for language modelling: the lines of a text file, or a
    ``column`` of JSON/CSV/Parquet rows, read through ``datasets``. Tokenised by a byte-level
    BPE (``tokenizers``) trained on the training lines (``vocab_size``: bytes plus merges) and
    saved with a model, so ``from_pretrained`` reloads both. Scored on held-out lines: loss
    per token (perplexity = exp(loss)), and accuracy is next-token accuracy."""

    kind: Literal["text"]
    weight: float = Field(1.0, ge=0)
    path: str
    column: str = "text"
    vocab_size: int = Field(512, ge=260, le=65536)
    max_tokens: int = Field(32, ge=2, le=1024)
    eval_fraction: float = Field(0.1, gt=0, lt=1)
    max_rows: int | None = Field(None, ge=2)


TaskSpec = Annotated[
    SequenceTask | FactsTask | ArithmeticTask | DatasetTask | TextTask, Field(discriminator="kind")
]
_TASK_KINDS = tuple(kind for task in get_args(get_args(TaskSpec)[0])
                    for kind in get_args(task.model_fields["kind"].annotation))
"""Every task ``kind``, in the order the task classes name them (for error messages)."""
