"""Ray's ``worker_process_setup_hook`` for a search: each worker imports what a trial needs.

A trial's first step imports torch and transformers' Llama (3-5 s on a laptop CPU, most of it
``transformers.modeling_utils``). Ray starts its worker processes when ``ray.init`` brings the
node up, while the driver is still setting up MLflow and the study, so importing there
overlaps that work instead of delaying each worker's first trial.
"""

from __future__ import annotations


def preload() -> None:
    import torch  # noqa: F401
    from transformers import LlamaConfig, LlamaForCausalLM  # noqa: F401

    import optimix.trial.train  # noqa: F401
