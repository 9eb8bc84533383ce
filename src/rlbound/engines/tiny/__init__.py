"""The built-in tiny model: a character-level Llama-style transformer that trains and samples on a
laptop CPU.

Modules: ``tokenizer`` (characters ↔ ids), ``model`` (the transformer and its KV cache),
``checkpoint`` (model directories), ``engine`` (the ``"tiny"`` engine: batched sampling, scoring),
``train`` (next-token fitting, the arithmetic lab model), ``export`` (to a Hugging Face
``LlamaForCausalLM`` directory). Importing this package registers the ``"tiny"`` engine.
"""

from rlbound.engines.tiny.checkpoint import load_model, save_model
from rlbound.engines.tiny.engine import TinyEngine
from rlbound.engines.tiny.model import KVCache, TinyConfig, TinyLlama
from rlbound.engines.tiny.tokenizer import CharTokenizer

__all__ = [
    "CharTokenizer",
    "KVCache",
    "TinyConfig",
    "TinyEngine",
    "TinyLlama",
    "load_model",
    "save_model",
]
