"""The model: a transformers Llama-family causal LM built from config (nothing downloaded).

Its size is a ``Shape``, given directly or picked for a target parameter count by the rule
in ``optimix.core.shape`` (pure: the budget prices a trial with it before anything is built)."""

from __future__ import annotations

from optimix.core.shape import Shape as Shape  # re-exported: the trial side's one import
from optimix.core.shape import default_d_ff as default_d_ff
from optimix.core.shape import shape_for as shape_for


def build_model(shape: Shape, seed: int):
    """A freshly initialised ``LlamaForCausalLM`` (seeded)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    hf_config = LlamaConfig(
        vocab_size=shape.n_vocab,
        hidden_size=shape.d_model,
        intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head,
        num_key_value_heads=shape.n_head,
        max_position_embeddings=max(shape.n_ctx, 16),
        tie_word_embeddings=shape.tie_embeddings,
        pad_token_id=0,
        bos_token_id=None,
        eos_token_id=2,
        attention_bias=False,
        mlp_bias=False,
        use_cache=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(hf_config)
    return model
