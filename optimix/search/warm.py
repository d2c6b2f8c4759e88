"""Ray's ``worker_process_setup_hook`` for a search: each worker imports what a trial needs.

A trial's first step imports torch and transformers' Llama (3-5 s on a laptop CPU, most of it
``transformers.modeling_utils``). The hook runs as Ray starts a worker for one of Tune's trial
actors, before the actor is built: the import is done once per worker process, before its first
trial, and a trial's own time holds only its training.
"""

from __future__ import annotations


def preload() -> None:
    import torch  # noqa: F401
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: F401

    import optimix.trial.train  # noqa: F401
