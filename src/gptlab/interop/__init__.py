"""Other tools' formats: Hugging Face ``transformers`` checkpoints, in and out; GGUF for llama.cpp, out.

- :mod:`~gptlab.interop.hf` — :func:`import_hf` turns a Hugging Face ``GPT2LMHeadModel``,
  ``LlamaForCausalLM``, ``MistralForCausalLM``, ``Qwen2ForCausalLM`` or ``Qwen3ForCausalLM``
  directory into a gptlab model and tokenizer; :func:`export_hf` writes a directory that
  ``transformers`` loads with ``from_pretrained`` (GPT-2, Llama, Qwen2 or Qwen3, as the config says);
- :mod:`~gptlab.interop.hub` — :func:`resolve_hf_source` finds a model id in the local Hugging Face
  cache, :func:`fetch_hf_model` downloads it when it is not there;
- :mod:`~gptlab.interop.hf_gpt2`, :mod:`~gptlab.interop.hf_llama` — each architecture's config and
  weight names; :mod:`~gptlab.interop.hf_weights` — the one weight mapping both use;
  :mod:`~gptlab.interop.hf_files` — reading and writing model directories;
  :mod:`~gptlab.interop.hf_tokenizer` — tokenizers with identical ids;
- :mod:`~gptlab.interop.hf_peft` — LoRA adapters as ``peft`` writes them, both ways
  (:func:`export_peft`, :func:`apply_peft_adapter`, :func:`import_peft_run`);
- :mod:`~gptlab.interop.hf_chat` — chat templates and ``generation_config.json``;
- :mod:`~gptlab.interop.gguf` — :func:`export_gguf` writes one GGUF file that llama.cpp and ollama
  run (architecture gpt2, llama, qwen2 or qwen3, as the config says); its tokenizer metadata is
  :mod:`~gptlab.interop.gguf_tokenizer`'s.
"""

from gptlab.interop.gguf import export_gguf
from gptlab.interop.hf import HFModel, export_hf, import_hf
from gptlab.interop.hf_peft import apply_peft_adapter, export_peft, import_peft_run
from gptlab.interop.hub import fetch_hf_model, hf_cache_dir, resolve_hf_source

__all__ = ["HFModel", "apply_peft_adapter", "export_gguf", "export_hf", "export_peft", "fetch_hf_model",
           "hf_cache_dir", "import_hf", "import_peft_run", "resolve_hf_source"]
