"""The ``tiny`` test model: a small randomly initialised Llama with the embedded model's tokenizer."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

TINY = "tiny"


def tiny_model_config(vocab_size: int, *, bos_token_id: int | None = 1, eos_token_id: int | None = 2,
                      pad_token_id: int | None = 2):
    """Config of the ``tiny`` model: Llama, hidden 64, 2 layers, 4 heads (2 kv), tied embeddings."""
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, architectures=["LlamaForCausalLM"],
    )


def build_tiny_model(tokenizer, seed: int = 0):
    """A randomly initialised tiny LlamaForCausalLM for `tokenizer`'s vocabulary.

    Deterministic for a seed; the global torch RNG is left as it was.
    """
    config = tiny_model_config(len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                               eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id,
                                               eos_token_id=config.eos_token_id,
                                               pad_token_id=config.pad_token_id)
    return model
