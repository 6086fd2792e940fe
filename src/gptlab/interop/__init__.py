"""Other tools' formats: Hugging Face ``transformers`` checkpoints, in and out.

- :mod:`~gptlab.interop.hf` — :func:`import_hf` turns a Hugging Face GPT-2 (a directory or a model
  id in the local cache) into a gptlab model and tokenizer; :func:`export_hf` writes a directory
  that ``transformers`` loads with ``from_pretrained``.
"""

from gptlab.interop.hf import export_hf, import_hf, resolve_hf_source

__all__ = ["export_hf", "import_hf", "resolve_hf_source"]
