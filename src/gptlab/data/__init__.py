"""Stage 1, text to tokens: the corpus, the tokenizers, token shards and the windows that training reads.

- :mod:`~gptlab.data.corpus` — the default corpus (the Python standard library's functions) and
  any folder or file of text, split into train and validation documents;
- :mod:`~gptlab.data.functions` — a Python source cut into its functions and methods, dedented:
  the default corpus's documents;
- :mod:`~gptlab.data.tokenizer` — character and byte-level BPE tokenizers, saved as ``tokenizer.json``;
- :mod:`~gptlab.data.shards` — :func:`prepare` writes token shards with a manifest;
  :class:`WindowSampler` draws the sliding windows (input, target shifted by one) a step trains on;
- :mod:`~gptlab.data.chat` — the ChatML template shared by fine-tuning, few-shot prompts and the server.

Nothing here knows about the model.
"""

from typing import TYPE_CHECKING

from gptlab.data.chat import ChatMessage, render_chat
from gptlab.data.corpus import Document, default_corpus_files, iter_documents, split_documents
from gptlab.data.tokenizer import (
    EOT,
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_gpt2_vocab,
    train_bpe_tokenizer,
    train_char_tokenizer,
)
from gptlab.lazy import lazy_exports

if TYPE_CHECKING:
    from gptlab.data.shards import PreparedData, WindowSampler, is_prepared, load_manifest, prepare

# shards (numpy windows as torch tensors) loads on first use (gptlab.lazy)
__getattr__ = lazy_exports(__name__, {
    "shards": ["PreparedData", "WindowSampler", "is_prepared", "load_manifest", "prepare"],
})

__all__ = [
    "EOT",
    "BPETokenizer",
    "CharTokenizer",
    "ChatMessage",
    "Document",
    "PreparedData",
    "Tokenizer",
    "WindowSampler",
    "default_corpus_files",
    "is_prepared",
    "iter_documents",
    "load_gpt2_vocab",
    "load_manifest",
    "prepare",
    "render_chat",
    "split_documents",
    "train_bpe_tokenizer",
    "train_char_tokenizer",
]
