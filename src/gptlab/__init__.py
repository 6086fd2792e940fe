"""gptlab: from the perceptron to GPT, built from scratch with PyTorch.

The packages follow the story, and data flows one way through them:
``data`` (text to tokens) → ``model`` (the GPT) → ``generate`` (one token at a time) → ``train``
(next-token prediction, checkpoints) → ``finetune`` (tasks, LoRA) → ``inspect`` and ``interop``
(looking inside, other tools' formats) → ``server`` (an OpenAI-compatible API) → ``cli``.
``neurons`` is the first chapter: the perceptron, ADALINE and backprop, apart from the GPT half.
Import what you need from them (``from gptlab.model import GPT``); nothing heavy is imported here.
"""

__version__ = "0.1.0"
