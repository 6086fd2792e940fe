"""gptlab: from the perceptron to GPT, built from scratch with PyTorch.

Import what you need from the submodules (``gptlab.model``, ``gptlab.train``, ...);
nothing heavy is imported here.
"""

__version__ = "0.1.0"
