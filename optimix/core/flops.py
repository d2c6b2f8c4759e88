"""Training FLOPs of the Llama-family models optimix builds. Pure: no torch.

Per token, forward pass, counting a multiply-add as 2 FLOPs (Kaplan et al. 2020,
arXiv:2001.08361, Table 1; PaLM, arXiv:2204.02311, Appendix B):

1. attention projections q, k, v, o:  4 * 2 * d_model * d_model
2. attention scores Q K^T and the weighted sum A V:  2 * 2 * n_ctx * d_model
   (PaLM's 6N + 12 L H Q T training count: the full n_ctx x n_ctx product, no discount
   for the causal mask, which is what dense kernels compute)
3. SwiGLU MLP (gate, up, down):  3 * 2 * d_model * d_ff
4. output projection to the vocabulary:  2 * d_model * n_vocab
   (Kaplan drops it as small; for tiny models it is a large share and must be counted)
5. the input embedding is a lookup: 0. Norms, RoPE, softmax and activations are
   elementwise, O(d_model) per token, and left out (as in both papers).

Training = forward + backward = 3 x forward (the backward pass computes gradients with
respect to both activations and weights: two matmuls per forward matmul).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FlopsBreakdown:
    """Forward FLOPs per token, by term."""

    attn_proj: float
    attn_context: float
    mlp: float
    lm_head: float

    @property
    def forward(self) -> float:
        return self.attn_proj + self.attn_context + self.mlp + self.lm_head

    @property
    def train(self) -> float:
        """Training FLOPs per token (forward + backward)."""
        return 3.0 * self.forward


def flops_breakdown(d_model: int, n_layer: int, d_ff: int, n_vocab: int, n_ctx: int) -> FlopsBreakdown:
    """Forward FLOPs per token of each term above, for a sequence length of ``n_ctx``."""
    return FlopsBreakdown(
        attn_proj=n_layer * 4 * 2 * d_model * d_model,
        attn_context=n_layer * 2 * 2 * n_ctx * d_model,
        mlp=n_layer * 3 * 2 * d_model * d_ff,
        lm_head=2 * d_model * n_vocab,
    )


def train_flops_per_token(d_model: int, n_layer: int, d_ff: int, n_vocab: int, n_ctx: int) -> float:
    return flops_breakdown(d_model, n_layer, d_ff, n_vocab, n_ctx).train


def param_counts(d_model: int, n_layer: int, d_ff: int, n_vocab: int, tie_embeddings: bool) -> tuple[int, int]:
    """(total, non-embedding) parameters of a bias-free Llama block stack with RMSNorm.

    Non-embedding excludes the input embedding and the output projection (Kaplan's N).
    """
    per_layer = 4 * d_model * d_model + 3 * d_model * d_ff + 2 * d_model
    non_embedding = n_layer * per_layer + d_model  # + the final norm
    embedding = n_vocab * d_model * (1 if tie_embeddings else 2)
    return non_embedding + embedding, non_embedding
