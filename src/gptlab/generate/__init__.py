"""Stage 3, generation: one token at a time, from a prompt to text.

- :mod:`~gptlab.generate.sampler` — the one sampler (prefill, then one decode step per token on the
  KV cache; temperature, top-k, top-p, seeds) that the CLI, the Python API, the trainer's samples
  and the server all use;
- :mod:`~gptlab.generate.healing` — token healing: back up the prompt's tail, constrain the
  next tokens to spell it again;
- :mod:`~gptlab.generate.compiled` — the same decode step compiled with ``torch.compile``;
- :mod:`~gptlab.generate.fewshot` — few-shot prompts built from examples.

It needs a model and a tokenizer, nothing from training.
"""

from gptlab.generate.fewshot import FewShotExample, FewShotFormat, build_few_shot_prompt, few_shot_messages
from gptlab.generate.sampler import SamplingParams, TextStream, generate_text, generate_tokens

__all__ = [
    "FewShotExample",
    "FewShotFormat",
    "SamplingParams",
    "TextStream",
    "build_few_shot_prompt",
    "few_shot_messages",
    "generate_text",
    "generate_tokens",
]
