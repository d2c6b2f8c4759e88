"""The shape of a model: its size as numbers (pure), and the rule that picks one for a
target parameter count.

Size is given as a shape (``d_model``, ``n_layer``, ``n_head``, ``d_ff``) or as a target
parameter count ``params``. The rule that maps a count to a shape (``shape_for``):

- ``d_model`` runs over multiples of 8 below 128, of 32 below 256, then of 64;
- ``n_layer = clamp(round(d_model / 48), 2, 32)`` (depth grows with width, about as in the
  small Pythia/Llama configs: 64 -> 2, 128 -> 3, 256 -> 5, 512 -> 11);
- ``n_head = 2`` below 128, ``d_model / 32`` below 256 (head size 32), then ``d_model / 64``
  (head size 64, as in Llama and Pythia: on a GPU, wider heads keep attention efficient;
  16 heads of 32 at 34M parameters ran at 29% MFU on an H100, 8 of 64 at 32%);
- ``d_ff`` = 8/3 ``d_model`` rounded up to a multiple of 16 (Llama's SwiGLU width);
- the shape whose total parameter count is closest in log scale to the target wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from optimix.core.config import ModelConfig
from optimix.core.flops import param_counts, train_flops_per_token


@dataclass(frozen=True)
class Shape:
    d_model: int
    n_layer: int
    n_head: int
    d_ff: int
    n_vocab: int
    n_ctx: int
    tie_embeddings: bool = False

    @property
    def params(self) -> int:
        return param_counts(self.d_model, self.n_layer, self.d_ff, self.n_vocab, self.tie_embeddings)[0]

    @property
    def non_embedding_params(self) -> int:
        return param_counts(self.d_model, self.n_layer, self.d_ff, self.n_vocab, self.tie_embeddings)[1]

    @property
    def train_flops_per_token(self) -> float:
        return train_flops_per_token(self.d_model, self.n_layer, self.d_ff, self.n_vocab, self.n_ctx)


def default_d_ff(d_model: int) -> int:
    return 16 * math.ceil(8 * d_model / 3 / 16)


def shape_for(config: ModelConfig, n_vocab: int, n_ctx: int) -> Shape:
    """The model's shape: given directly, or derived from ``config.params`` by the rule above."""
    if config.params is None:
        d_ff = config.d_ff or default_d_ff(config.d_model)
        return Shape(config.d_model, config.n_layer, config.n_head, d_ff, n_vocab, n_ctx,
                     config.tie_embeddings)
    best, best_gap = None, math.inf
    for d_model in [*range(8, 128, 8), *range(128, 256, 32), *range(256, 8193, 64)]:
        n_layer = min(32, max(2, round(d_model / 48)))
        n_head = 2 if d_model < 128 else d_model // 32 if d_model < 256 else d_model // 64
        shape = Shape(d_model, n_layer, n_head, default_d_ff(d_model), n_vocab,
                      n_ctx, config.tie_embeddings)
        gap = abs(math.log(shape.params / config.params))
        if gap < best_gap:
            best, best_gap = shape, gap
    return best
