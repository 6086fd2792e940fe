#!/usr/bin/env python
"""Write docs/tutorial.md, "From one neuron to GPT", by running every command it shows.

The tutorial is the list ``STEPS`` below: for each step, some prose, the shell commands a reader
types (``gptlab ...``), and the pictures those commands write. This script runs the commands in a
fresh empty folder, one after the other (later steps use the model an earlier one trained),
captures what they print (progress bars removed, long outputs cut in the middle), copies the
pictures next to the page and writes the page. Nothing in the page is typed by hand except the
prose, so the outputs stay true.

    python docs/make_tutorial.py --full            # the real settings: writes docs/tutorial.md + docs/tutorial/*.png
    python docs/make_tutorial.py --fast --out DIR  # tiny settings, ~2 minutes: what tests/test_tutorial.py runs
    python docs/make_tutorial.py --full --save-results R.json   # ... and keep the outputs, then after an
    python docs/make_tutorial.py --full --render R.json         # edit of the prose, write the page again

In ``--fast`` mode each command gets the step's ``fast`` flags appended (a tiny model, a few steps,
a small corpus); argparse lets the last flag win, so they override the flags shown. The page then
shows the commands that actually ran.

Commands run with ``bash``; ``gptlab`` and ``python`` are this interpreter (``sys.executable``),
so the script works from any environment that has gptlab installed with the ``dev`` extras. With
``--fast`` (on Linux) they are forked from one process that has already imported PyTorch
(``--prefork``, below), which halves the CPU time of the test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PORT = 8765  # the port the serving step shows; another free one is used if it is taken
RUN = "runs/python-stdlib"  # where `gptlab train` with no arguments puts its run, in an empty folder


@dataclass(frozen=True)
class Command:
    """One command as the reader types it (bash syntax), and how much of its output to show."""

    text: str
    fast: str = ""  # flags appended in --fast mode
    head: int = 40  # lines kept from the start of the output ...
    tail: int = 12  # ... and from its end, with a marker between, when it is longer than both

    def to_run(self, fast: bool) -> str:
        return f"{self.text} {self.fast}" if fast and self.fast else self.text


@dataclass(frozen=True)
class Step:
    """A section of the tutorial: prose, the commands with their outputs, the pictures, prose."""

    id: str
    title: str
    intro: str
    commands: tuple[Command, ...]
    pictures: tuple[tuple[str, str], ...] = ()  # (path in the work folder, caption)
    outro: str = ""
    files: tuple[tuple[str, str], ...] = ()  # (path, content) written before the commands, and shown
    server: Command | None = None  # started in the background before the commands, stopped after


# ---------------------------------------------------------------------------------------------
# The tutorial
# ---------------------------------------------------------------------------------------------

FEW_SHOT_EXAMPLES = "\n".join(
    json.dumps(record)
    for record in [
        {"instruction": "Store each argument on self."},
        {"input": "name", "output": "self.name = name"},
        {"input": "parent", "output": "self.parent = parent"},
        {"input": "size", "output": "self.size = size"},
    ]
) + "\n"

MODULES = ("os", "sys", "re", "math", "json", "time", "random", "shutil")
ALPACA_EXAMPLES = "[\n" + ",\n".join(  # a JSON array, one record a line
    " " + json.dumps({"instruction": "Write the line that imports this module.", "input": name, "output": f"import {name}"})
    for name in MODULES
) + "\n]\n"
SHAREGPT_EXAMPLES = "\n".join(
    json.dumps({"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]})
    for question, answer in [
        ("How do I read a whole file?", "with open(path) as f:\n    text = f.read()"),
        ("How do I list a folder?", "os.listdir(path)"),
        ("How do I join two paths?", "os.path.join(a, b)"),
        ("How do I leave a loop early?", "break"),
    ]
) + "\n"
SHOW_LAYOUT = """\
python - <<'EOF'
from gptlab.finetune.data import load_records

for path in ("alpaca.json", "sharegpt.jsonl"):
    record = load_records(path)[0]
    print(f"--- {record.where}, the trained part in [brackets]:")
    print("".join(f"[{text}]" if trained else text for text, trained in record.segments))
EOF"""
CHAT_PROMPT = "<|im_start|>user\\nWrite the line that imports this module.\\n\\nsubprocess<|im_end|>\\n<|im_start|>assistant\\n"
READ_GGUF = """\
python - <<'EOF'
from gguf import GGUFReader

reader = GGUFReader("stdlib.gguf")
field = lambda name: reader.fields[name].contents()
arch = field("general.architecture")
print("architecture:", arch, "| layers:", field(f"{arch}.block_count"),
      "| width:", field(f"{arch}.embedding_length"), "| context:", field(f"{arch}.context_length"))
tokens = field("tokenizer.ggml.tokens")
print("tokenizer:", field("tokenizer.ggml.model"), "|", len(tokens), "tokens, e.g.", tokens[300:305])
print(len(reader.tensors), "tensors, the first five:")
for tensor in reader.tensors[:5]:
    print(f"  {tensor.name:24} {tensor.tensor_type.name:4} {tensor.shape.tolist()}")
EOF"""

DOCSTRING_PROMPT = 'def is_empty(self):\n    """Return True if the queue is empty."""\n'
DOCSTRING_SAMPLE = (  # bash's $'...' turns \n into newlines
    f"--prompt $'{DOCSTRING_PROMPT.encode('unicode_escape').decode()}' "
    "--max-new-tokens 40 --temperature 0.5 --seed 1 --stop $'\\n\\n'"
)

STEPS: tuple[Step, ...] = (
    Step(
        id="perceptron",
        title="One neuron learns to see: the perceptron (1958)",
        intro="""\
In 1958 Frank Rosenblatt described a machine that learns from examples. His Mark I Perceptron
looked at the world through a 20×20 grid of photocells, a 400-pixel "retina". Each pixel was wired
to one neuron through an adjustable weight. The neuron adds up pixel × weight, adds a bias, and
answers *yes* if the sum is positive and *no* otherwise.

The learning rule is almost embarrassingly simple. Show the neuron an example. If it answers
right, do nothing. If it answers wrong, add the picture to the weights (when it should have said
yes) or subtract it (when it should have said no). Repeat until a whole pass over the examples goes
by without a mistake.

Here the neuron learns to tell handwritten zeros from ones, scaled up to the Mark I's 20×20 retina:""",
        commands=(Command("gptlab perceptron"),),
        pictures=(
            ("runs/perceptron/weights.png", "the perceptron's 400 weights, drawn on its 20×20 retina"),
            ("runs/perceptron/mistakes.png", "mistakes per epoch"),
        ),
        outro="""\
The picture of the weights is the neuron's "retina": each cell is the weight of one pixel. Red
cells vote for *one*, blue cells for *zero*, so you can read off what the neuron looks at: a red
bar down the middle, where a one has its stroke, and blue around it, where a zero draws its ring.

The last line of the output is a theorem at work. Novikoff proved in 1962 that when some straight
line (a hyperplane, in 400 dimensions) separates the two classes, the perceptron stops after at
most (R/γ)² mistakes, R being the size of the largest input and γ the width of the widest gap
between the classes. `gptlab perceptron` computes both and checks the promise.""",
    ),
    Step(
        id="adaline",
        title="Learning from the error: ADALINE (1960)",
        intro="""\
Two years later Bernard Widrow and Ted Hoff at Stanford built ADALINE, the same neuron with a
different way of learning. The perceptron learns only from *mistakes*, and only from their sign.
ADALINE learns from the *error*: how far the weighted sum was from the target (+1 or −1), on every
example, right or wrong. Each weight moves a little in the direction that shrinks the squared
error: `w += η · (target − w·x − b) · x`.

That rule, least mean squares, is gradient descent: follow the slope of the error downhill, one
small step at a time. Sixty-five years later, a GPT is trained the same way.""",
        commands=(Command("gptlab adaline"),),
        pictures=(
            ("runs/adaline/weights.png", "ADALINE's weights on the same retina"),
            ("runs/adaline/loss.png", "mean squared error per epoch"),
        ),
        outro="""\
Every answer is already right after the first epoch, yet ADALINE keeps learning: the squared
error keeps falling, because a right answer given with little confidence still has an error to
learn from. Its retina shows the same idea as the perceptron's, a stroke in the middle against a
ring around it, learned in a different way.""",
    ),
    Step(
        id="xor",
        title="The XOR wall, and backpropagation (1969, 1986)",
        intro="""\
One neuron draws one straight line. In 1969 Marvin Minsky and Seymour Papert's book *Perceptrons*
made the limits of that precise. The simplest example is XOR, "one or the other but not both": the
points (0,1) and (1,0) are *yes*, (0,0) and (1,1) are *no*, and no straight line puts the two
yeses on one side and the two noes on the other. Funding and interest in neural networks dried up
for more than a decade.

The way through was known in principle: put a layer of *hidden* neurons between the input and the
output. What was missing was a way to train them. Backpropagation, made famous by Rumelhart, Hinton
and Williams in 1986, uses the chain rule to send the output's error backwards through the network,
so every weight, hidden ones included, learns how it should change. That needs neurons whose output
changes smoothly (a sigmoid or tanh) rather than jumping from *no* to *yes*.""",
        commands=(Command("gptlab xor"),),
        pictures=(
            (
                "runs/xor/perceptron_boundary.png",
                "one perceptron: the best line it passed through gets 3 of the 4 points (dashed: its line after each epoch)",
            ),
            (
                "runs/xor/mlp_boundary.png",
                "a 2-4-1 network trained by backpropagation bends the boundary (dashed: its hidden units' lines)",
            ),
            ("runs/xor/mlp_loss.png", "the network's loss during training"),
        ),
        outro="""\
The perceptron never gets through an epoch without a mistake. The best line it passed through,
kept in its "pocket", still gets one corner wrong (ringed): three of four is the most a line can
do. Each hidden unit of the network draws a line of its own (dashed), and the output unit combines
their half-planes into a region no single line could make.

Everything from here on is this idea, scaled up: layers of neurons with smooth activations, a loss
that measures the error, and backpropagation with gradient descent to shrink it. A GPT has millions
to billions of weights instead of 17, and predicts text instead of XOR.""",
    ),
    Step(
        id="tokens",
        title="From pixels to text: tokens",
        intro="""\
A neural network computes with numbers, so text must become numbers first. We could give every
character its own number, but then the model spends most of its effort spelling. GPT-2 (2019) uses
byte-level *byte-pair encoding*: start from the 256 possible bytes, then repeatedly merge the pair
of neighbouring pieces that occurs most often in the training text into a new piece, until the
vocabulary has the size you want. Frequent words and code idioms become single tokens; anything
else can still be spelled out in bytes, so any text at all can be encoded.

Our corpus is Python: the functions of the standard library of the Python you are running (no
download), every `def` and method cut out of its file and moved to column 0, one document each,
so that the model sees where a function begins and where it ends. `gptlab prepare` learns a
2,048-token vocabulary from them and turns the text into token ids, stored as flat binary files
ready for training:""",
        commands=(
            Command(
                "gptlab prepare --tokenizer bpe --vocab-size 2048 --out data/stdlib",
                fast="--max-bytes 200000",
            ),
            Command(
                """\
python - <<'EOF'
from gptlab.data.tokenizer import Tokenizer
tok = Tokenizer.load("data/stdlib")
text = 'def greet(name):\\n    return "Hello, " + name\\n'
ids = tok.encode(text)
print(len(text), "characters ->", len(ids), "tokens:", ids)
print(" | ".join(repr(tok.decode([i])) for i in ids))
EOF"""
            ),
        ),
        outro="""\
Common pieces of Python such as `def`, ` return` and four spaces of indentation got tokens of
their own; a rarer name is spelled out in smaller pieces. GPT-2's vocabulary has 50,257 tokens,
ours 2,048, which suits a small model and a small corpus.""",
    ),
    Step(
        id="train",
        title="Training a GPT",
        intro="""\
Now the real thing. A GPT (Radford et al., 2018) is a stack of *transformer* blocks (Vaswani et
al., 2017). Each token id is looked up in a table of vectors, its *embedding*; its position is
marked (GPT-2 adds a learned position vector; the Llama-style model we train turns the attention's
queries and keys by an angle that grows with the position, *rotary* positions); then every block
lets each token gather information from the tokens before it (*attention*)
and transforms it with a small two-layer network of neurons (the *MLP*, the XOR network's big
brother). At the end, the vector at each position is turned into a score for every token of the
vocabulary: the model's guess at what comes next.

Training shows the model random windows of the corpus and, at every position, asks it to predict
the next token. The loss is the cross-entropy, −log of the probability it gave the right token;
backpropagation and gradient descent do the rest (here with Muon, an optimizer from 2024, for the
weight matrices, and AdamW for the rest). No labels are needed: the text is its own teacher.

With no arguments, `gptlab train` does the whole job: it reads the standard library's functions,
trains a 2,048-token tokenizer, trains the `qwen3-small` model (built as today's open models are:
RMSNorm, rotary positions, a SwiGLU MLP, grouped-query attention, and, as in Qwen3, a norm on each
head's queries and keys; 4 blocks, 4 attention heads, vectors of
128 numbers, a context of 128 tokens, 1.05 million weights) for 1,000 steps of 16 windows, and
prints a sample of the Python it learned to write. `--log-to tensorboard,csv` also writes the
metrics for TensorBoard and as a table:""",
        commands=(
            Command(
                "gptlab train --log-to tensorboard,csv",
                fast="--preset tiny --block-size 128 --max-steps 30 --batch-size 8 --max-bytes 200000 "
                "--eval-interval 15 --eval-iters 2 --sample-tokens 60",
                head=30,
                tail=30,
            ),
            Command(f"head -n 4 {RUN}/metrics.csv"),
        ),
        pictures=((f"{RUN}/loss.png", "training and validation loss"),),
        outro=f"""\
The loss starts near ln(2048) ≈ 7.6, the loss of a model that knows nothing and gives every token
the same probability, and falls as the model learns the statistics of Python. The validation loss
is measured on the functions of files the model never trained on. The sample looks like Python
from a distance, with docstrings, indentation and calls, and falls apart up close, with invented
words; each function ends with `<|endoftext|>`, as every document of the corpus does, and the
sample goes on with the next one. This model has seen about 2 million tokens (1,000 × 16 × 128), a speck of what GPT-2 saw. Everything
lands in `{RUN}/`: the checkpoint, the tokenizer, the metrics (`metrics.jsonl`, and with
`--log-to` `metrics.csv` and `tensorboard/`) and the loss curve. `tensorboard --logdir {RUN}`
shows the same curves in a browser, as it would for any PyTorch or Hugging Face run.""",
    ),
    Step(
        id="sample",
        title="Writing one token at a time",
        intro="""\
A GPT writes the way it was trained: it reads the prompt, computes a probability for every possible
next token, picks one, appends it, and repeats. Each new token costs one pass through the network;
a *KV cache* keeps what was computed for the earlier tokens, so they are not recomputed.

How the token is picked matters. *Greedy* decoding (`--temperature 0`) always takes the most
probable one, which is deterministic and tends to loop. *Sampling* draws at random from the
probabilities, divided in the log domain by a temperature: below 1 the favourites get more likely,
above 1 the long tail gets a chance. A seed makes the dice repeatable.""",
        commands=(
            Command(f'gptlab sample {RUN} --prompt "def " --max-new-tokens 60 --temperature 0'),
            Command(f'gptlab sample {RUN} --prompt "def " --max-new-tokens 60 --temperature 0.8 --seed 1'),
            Command(f'gptlab sample {RUN} --prompt "def " --max-new-tokens 60 --temperature 0.8 --seed 2'),
            Command(f'gptlab sample {RUN} --prompt "def " --max-new-tokens 60 --temperature 0 --no-token-healing'),
        ),
        outro="""\
The same model and prompt, three different texts: the model does not hold one answer, it holds a
probability distribution over all continuations, and decoding chooses a path through it.

The last command is the first one with *token healing* turned off. The tokenizer learned a space
and the name after it as one token (` name`), so in training a token almost never ended with the
space after `def`. Encoded as it is, the prompt `def ` ends with a lone space token, a split the
model has rarely seen, and it has to go on from there. Token healing, on by default in
`gptlab sample`, backs the prompt up by that token and lets the first new token be any token that
starts with a space: the model spells the space again together with a name, the way it learned to
(the text printed still starts after the prompt). Here the two greedy texts part at once: healed,
the model wrote an `__init__` that names `master` five times, a docstring and a call; unhealed, it
went on from the lone space with `uto(self, name, name, ...` and repeated ` name` until the tokens
ran out, the loop greedy decoding often falls into. One text shows little either way; over many samples, healing
keeps the model on ground it knows ([sampling](sampling.md#token-healing): early in training, 46
of 50 samples put a name after `def ` with healing, 20 of 50 without).""",
    ),
    Step(
        id="next",
        title="Probabilities: what the model expects",
        intro="""\
We can look at those probabilities directly. `gptlab inspect next` shows the most likely next
tokens after a text and, for every token of the text, how surprised the model was to see it: the
*surprisal* −log₂ p, in bits. Its average, in nats, is exactly the loss the model was trained to
lower, and e to that power is the *perplexity*: the number of equally likely tokens the model is,
in effect, choosing between.""",
        commands=(Command(f'gptlab inspect next {RUN} "    def __init__(self" --top-k 8 --out runs/inspect'),),
        pictures=(("runs/inspect/next_token.png", "the most probable next tokens"),),
        outro="""\
Tokens that follow from what came before, such as `__(` after `init` and `self` after the
parenthesis, cost few bits; ` def` after four spaces, and the ` __` after it, could have been many
things, and cost the most. The bar chart is the top of the distribution the model samples its next token from.""",
    ),
    Step(
        id="attention",
        title="Attention: who looks at whom",
        intro="""\
Attention is how information moves between positions. At each position a head forms a *query*;
every earlier position offers a *key* and a *value*; the query's similarity with each key, passed
through a softmax, gives weights that sum to 1, and the head returns the weighted mix of the
values. A token can only look back, never ahead: that is what makes the model a next-token
predictor. Each block has several heads, each free to learn its own pattern.""",
        commands=(
            Command(f'gptlab inspect attention {RUN} "def __init__(self, name):" --out runs/inspect'),
            Command(f'gptlab inspect attention {RUN} "def __init__(self, name):" --token -1 --out runs/inspect'),
        ),
        pictures=(("runs/inspect/attention.png", "attention weights of every layer (rows) and head (columns)"),),
        outro="""\
In the heat maps, row *i* is the token doing the looking and column *j* the token it looks at; the
upper triangle is empty because the future is hidden. The first command's table sums each head up:
how much weight, on average, a token puts on itself, on the token just before it, and on the first
token. Heads often park weight on the first token when nothing else is worth reading (an
"attention sink", seen in large models too), while others pick out particular earlier tokens; in
larger models some heads become sharp *previous-token heads*, one of the building blocks of
copying text from the context. `runs/inspect/attention.html` is an interactive page: hover over a
token to see what it attends to.""",
    ),
    Step(
        id="lens",
        title="The logit lens: reading the model's mind layer by layer",
        intro="""\
Each block adds its contribution to a running vector at every position, the *residual stream*.
The logit lens (nostalgebraist, 2020) reads that vector after each block through the model's
final layer, as if the model stopped there, and shows what it would predict:""",
        commands=(Command(f'gptlab inspect lens {RUN} "import os" --out runs/inspect'),),
        pictures=(("runs/inspect/lens.png", "top prediction after each layer"),),
        outro="""\
The last row is the model's real prediction; the rows above show it taking shape. After ` os`
every block bets on `.` (as in `os.path`), at about 0.8: this model has read `os` inside
functions, mostly as `os.path...`, and hardly ever `import os` on a line of its own, since the
imports at the top of a file are not part of its corpus. The row read straight
after the embeddings "predicts" the token being read: this model, like GPT-2 and Qwen3's small
models, reads and writes tokens with one table, and each token's vector is most similar to itself.""",
    ),
    Step(
        id="embeddings",
        title="Embeddings: a map of the vocabulary",
        intro="""\
Every token is a vector of numbers, learned during training like every other weight. Tokens that
are used in similar places end up with similar vectors, an idea that goes back to Bengio et al.
(2003) and became famous with word2vec (2013). We can ask which tokens sit closest to a given one,
and flatten the vectors onto a plane with a principal component analysis:""",
        commands=(Command(f'gptlab inspect embeddings {RUN} --token " return" --k 8 --out runs/inspect'),),
        pictures=(("runs/inspect/embeddings_pca.png", "token embeddings on their first two principal components"),),
        outro="""\
Nobody told the model what a keyword is; the neighbours it finds come only from where tokens
appear in the code it read. The picture shows the first 100 ids of the vocabulary, which in a
byte-level BPE are single characters: look for where the capital letters, the small letters and
the digits end up, and for the special tokens, which never occur in the training text.""",
    ),
    Step(
        id="fewshot",
        title="Few-shot prompting: learning from the prompt (2020)",
        intro="""\
GPT-3's paper was called *Language Models are Few-Shot Learners* (Brown et al., 2020). Without
changing a single weight, a large enough model picks up a task from a few worked examples placed
in its prompt, then continues the pattern for a new input. The examples go in a JSONL file, one per
line, with an optional instruction:""",
        files=(("examples.jsonl", FEW_SHOT_EXAMPLES),),
        commands=(
            Command(
                f"gptlab sample {RUN} --few-shot examples.jsonl --prompt timeout --temperature 0 --max-new-tokens 12"
            ),
        ),
        outro="""\
The output starts with the prompt the model was given: `<|endoftext|>` (the start of a document),
the instruction, each example as `input => output` closed by the separator token `<|sep|>`, and
the query `timeout =>`; generation stops at the next separator. GPT-3 has 175 billion weights and
this model about a million, and the separator never occurs in its training text, so do not expect
much: the ability to pick up a task from the prompt grows with size and training, and a model this
small catches at best the shape of the answer, not the rule.""",
    ),
    Step(
        id="finetune",
        title="Fine-tuning: teaching the model a task",
        intro="""\
The other way to teach a task is to keep training on examples of it. This is how GPT-1 was adapted
to its benchmarks, and, with human-written answers, how a base model becomes an assistant. Our
task: given a function's signature and docstring, write its body. `gptlab dataset docstrings`
harvests such pairs from the standard library:""",
        commands=(
            Command("gptlab dataset docstrings --out data/docstrings.jsonl --max-chars 300", fast="--max-examples 200"),
            Command(
                f"gptlab finetune {RUN} --data data/docstrings.jsonl --lora --max-steps 150 --truncate",
                fast="--max-steps 6 --eval-interval 3 --batch-size 4",
            ),
            Command(f"gptlab sample {RUN} {DOCSTRING_SAMPLE}"),
            Command(f"gptlab sample {RUN}-lora {DOCSTRING_SAMPLE}"),
        ),
        pictures=((f"{RUN}-lora/loss.png", "fine-tuning loss"),),
        outro="""\
`--lora` trains LoRA adapters (Hu et al., 2021) instead of every weight: next to each weight
matrix W sits a product B·A of two thin matrices, and only those learn, a small fraction of the
weights, while the original model stays frozen. The loss counts only the completion (the body),
not the prompt; the validation loss before the first step is the base model's, for comparison.
`--max-steps 150` is about half a pass over the examples, and `--truncate` cuts the few examples
that are longer than the model's context of 128 tokens.

The last two commands give the model, before and after fine-tuning, the same signature and
docstring, and stop at the first blank line. Trained on whole functions, the
base model already knows that a body follows a docstring: it writes one line, a call on an
attribute it made up. The fine-tuned model writes a shorter one, `return self._closing`, closer to
what such a method does. The loss on bodies it never trained on says more than one sample: 2.65
before and 2.16 after. Its code is not correct, nobody would expect that of a model this size, but
it has the task's shape.""",
    ),
    Step(
        id="instructions",
        title="Instruction data: Alpaca and ShareGPT",
        intro="""\
The examples people share for teaching a model to follow instructions come in a few common
shapes. Stanford's Alpaca (2023) gives each example an `instruction`, an optional `input` and the
`output` wanted, all in one JSON array; ShareGPT files hold whole conversations, turns `from` a
`human` or `gpt`. `gptlab finetune` reads both as they are, next to its own `text`,
`prompt`/`completion` and `messages` records. A small file of each kind:""",
        files=(("alpaca.json", ALPACA_EXAMPLES), ("sharegpt.jsonl", SHAREGPT_EXAMPLES)),
        commands=(
            Command(SHOW_LAYOUT),
            Command(
                f"gptlab finetune {RUN} --data alpaca.json --max-steps 60 --learning-rate 1e-3 --val-fraction 0.25 "
                "--eval-interval 10 --out runs/alpaca --log-to csv",
                fast="--max-steps 4",
            ),
            Command(
                f"gptlab sample runs/alpaca --prompt $'{CHAT_PROMPT}' --temperature 0 --max-new-tokens 8 "
                "--stop '<|im_end|>'"
            ),
        ),
        outro="""\
Both become a chat in the ChatML layout (`<|im_start|>` role, text, `<|im_end|>`), the one the
server's chat endpoint uses: an Alpaca example is one user turn (the instruction, a blank line,
the input) and one assistant turn. Only the assistant's turns, with the `<|im_end|>` that closes
them, are trained; the rest is context. The fine-tuning above used the Alpaca file;
`--data sharegpt.jsonl` trains on the conversations the same way. `--log-to csv` wrote the same
metrics as `metrics.jsonl` to `runs/alpaca/metrics.csv`, ready for a spreadsheet.

This time every weight trains (no `--lora`): pre-training never showed the model `<|im_end|>`,
so the output layer's row for it has to learn too, and a LoRA adapter leaves that layer frozen.
Six examples of one pattern are enough for the model to pick up the shape of the answer, one line
with `import` and then the end of the turn (the sample stops there, at `--stop`); it indents the
line, as every `import` it read in pre-training was inside a function, and which module to name,
a word it would have to copy from the question, is beyond a model this small and this little
data: it names another one. Real instruction sets hold tens of thousands of examples: the same files and the
same command, only longer.""",
    ),
    Step(
        id="export",
        title="Taking the model elsewhere: llama.cpp, transformers and peft",
        intro="""\
A model is more useful where people already run models. `gptlab export-gguf` writes one GGUF
file, the format of llama.cpp and ollama: the weights (here in 16-bit floats), the shape and the
tokenizer, all in one file. The `gguf` package, the one llama.cpp's own scripts use, reads it
back:""",
        commands=(
            Command(f"gptlab export-gguf {RUN} stdlib.gguf"),
            Command(READ_GGUF),
            Command(f"gptlab export-hf {RUN}-lora exported/lora --peft"),
            Command(f"gptlab import-hf exported/lora --base {RUN} --out runs/from-peft"),
            Command(f"gptlab sample runs/from-peft {DOCSTRING_SAMPLE}"),
        ),
        outro="""\
The file names the llama.cpp architecture that computes this model and holds its tokenizer's
vocabulary in GPT-2's byte-level spelling (`Ġ` stands for a space); GGUF lists a tensor's
dimensions fastest-varying first, so the embedding table shows as width × vocabulary. With
llama.cpp installed, `llama-cli -m stdlib.gguf -p 'def ' -n 60 --temp 0` runs the file (a test
compares its greedy tokens with `gptlab sample --temperature 0`); `--outtype q8_0` makes it a
quarter of its f32 size.

`gptlab export-hf` writes a folder that Hugging Face `transformers` loads with
`AutoModelForCausalLM.from_pretrained`. For the LoRA run of the fine-tuning step, `--peft` writes
the adapter as the `peft` library writes its own (`adapter_config.json` and
`adapter_model.safetensors`) and the base model beside it, so
`PeftModel.from_pretrained(base, "exported/lora")` gives the fine-tuned model. `gptlab import-hf`
goes the other way, for a whole model or, as here, a peft adapter put on a gptlab base: the
imported adapter writes the same body as the fine-tuned model did in the fine-tuning step.""",
    ),
    Step(
        id="count",
        title="Counting neurons",
        intro="""\
How big is our model next to the famous ones? `gptlab count` counts parameters, "neurons" (the
output units of every layer inside the blocks) and the arithmetic per token from the shape alone,
so it can count GPT-3 without building it:""",
        commands=(
            Command(f"gptlab count {RUN}"),
            Command("gptlab count gpt3-175b"),
        ),
        outro="""\
Training costs about 6 floating-point operations per weight per token: 2 for the forward pass,
4 for the backward pass (Kaplan et al., 2020). That is the whole secret of the next step.""",
    ),
    Step(
        id="cost",
        title="Estimating the cost of training",
        intro="""\
Multiply 6 × parameters × training tokens and you have the compute a training run needs. Divide
by what a GPU sustains and you have GPU-hours; multiply by a price and you have dollars. With no
arguments `gptlab cost` reproduces the famous estimate for GPT-3 (175 billion parameters, 300
billion tokens, on 2020's V100 GPUs at $1.50 an hour):""",
        commands=(
            Command("gptlab cost"),
            Command(f"gptlab cost --params {RUN} --tokens 2.05e6 --gpu H100"),
        ),
        outro="""\
The second command is our `gptlab train`: 1,000 steps × 16 windows × 128 tokens ≈ 2 million
tokens on the model it trained, a fraction of a second of one H100's compute, a few minutes on a
laptop. Training GPT-3 took over ten billion times more arithmetic.""",
    ),
    Step(
        id="serve",
        title="Serving the model through an API",
        intro=f"""\
Finally, put the model behind the same HTTP API that OpenAI's models use, so any program that
speaks it (curl, the `openai` client, LangChain, ...) can call our little GPT. The server also has
a playground page, http://127.0.0.1:{PORT}/ in a browser, where you can type prompts and see each
token coloured by the probability the model gave it. Start it in one terminal:""",
        server=Command(f"gptlab serve {RUN} --port {PORT}"),
        commands=(
            Command(
                f"""\
curl -s http://127.0.0.1:{PORT}/v1/completions -H "Content-Type: application/json" \\
  -d '{{"model": "python-stdlib", "prompt": "def ", "max_tokens": 30, "temperature": 0.8, "seed": 1,
       "token_healing": true}}' \\
  | python -m json.tool"""
            ),
            Command(
                f"""\
python - <<'EOF'
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:{PORT}/v1", api_key="none")
stream = client.completions.create(model="python-stdlib", prompt="import ", max_tokens=30, seed=7, stream=True)
for chunk in stream:
    print(chunk.choices[0].text, end="", flush=True)
print()
EOF"""
            ),
        ),
        outro="""\
The server decodes with the same code as `gptlab sample`, so the same prompt, temperature and seed
give the same text: compare the curl answer with the `--seed 1` sample of step 6. Token healing,
on by default in `gptlab sample`, is something a request asks for on the server
(`"token_healing": true`), since an OpenAI client expects its prompt to be taken as it is. The streaming
client prints the tokens as they arrive, the way chat interfaces show an answer being written.

That is the whole path, from one neuron on a 20×20 retina to a GPT answering over the same API as
the big ones. The rest is scale: more layers, wider vectors, more text, more GPUs. Where to go from
here: train longer (`--max-steps 3000`) or wider (`--preset llama-mini`), train on your own text
(`--data`), look inside with `gptlab inspect`, or read `src/gptlab/model/gpt.py`, the whole GPT in one
file.""",
    ),
)


# ---------------------------------------------------------------------------------------------
# Running the commands
# ---------------------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm: "train:  47%|████▋     | 14/30 [...]"


def clean_output(raw: str, workdir: Path) -> list[str]:
    """What a terminal would end up showing, without progress bars: ``\\r``-overwritten bar
    updates dropped, messages printed between bar updates kept, absolute paths made relative."""
    text = ANSI.sub("", raw).replace(str(workdir) + os.sep, "").replace(str(workdir), ".")
    lines: list[str] = []
    for line in text.split("\n"):
        if "\r" not in line:
            if not PROGRESS_BAR.search(line):
                lines.append(line.rstrip())
            continue
        lines += [s.rstrip() for s in line.split("\r") if s.strip() and not PROGRESS_BAR.search(s)]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def cut(lines: list[str], head: int, tail: int) -> list[str]:
    """The first ``head`` and last ``tail`` lines, with a marker for what was left out."""
    if len(lines) <= head + tail + 1:
        return lines
    return [*lines[:head], f"[… {len(lines) - head - tail} lines cut …]", *lines[-tail:]]


def shell_prelude(prefork: Prefork | None = None) -> str:
    python = shlex.quote(sys.executable)
    if prefork is not None:  # gptlab and `python -` go to the forking server; anything else runs as usual
        client = f"{python} -S -I {shlex.quote(str(prefork.client))} {shlex.quote(str(prefork.socket))}"
        return (
            f'gptlab() {{ {client} gptlab "$@"; }}\n'
            f'python() {{ if [ "$*" = "-" ]; then {client} python -; else {python} "$@"; fi; }}\n'
            "set -o pipefail\n"
        )
    return (
        f'gptlab() {{ {python} -m gptlab "$@"; }}\n'
        f'python() {{ {python} "$@"; }}\n'
        "set -o pipefail\n"
    )


# ---------------------------------------------------------------------------------------------
# --prefork: start each command from a process that has already imported PyTorch
# ---------------------------------------------------------------------------------------------
# Every `gptlab` command starts a Python that imports PyTorch, about 2 s of CPU before it does
# anything; the fast run has some 35 of them. With --prefork (the default of --fast on Linux), one
# server process imports gptlab and PyTorch once and forks a child per command: the `gptlab` shell
# function runs a small stdlib-only client that hands the server its arguments, working folder,
# environment and its stdin/stdout/stderr (file descriptors over a Unix socket); the child runs
# `gptlab.cli.main.main(argv)` (or a `python -` script) on them and reports the exit code. The
# server has run no PyTorch operation, so no OpenMP threads exist when it forks.

PREFORK_CLIENT = """\
import array, json, os, socket, sys

path, kind, args = sys.argv[1], sys.argv[2], sys.argv[3:]
with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
    sock.connect(path)
    request = json.dumps({"kind": kind, "argv": args, "cwd": os.getcwd(), "env": dict(os.environ)})
    socket.send_fds(sock, [request.encode()], [0, 1, 2])
    answer = sock.recv(64)
sys.exit(int(answer) if answer else 1)  # no answer: the child died (a signal)
"""


@dataclass
class Prefork:
    """The forking server (see above) and where its client and socket are."""

    folder: Path
    process: subprocess.Popen

    @property
    def socket(self) -> Path:
        return self.folder / "prefork.sock"

    @property
    def client(self) -> Path:
        return self.folder / "client.py"

    @classmethod
    def start(cls, timeout: float = 120.0) -> Prefork:
        folder = Path(tempfile.mkdtemp(prefix="gptlab-prefork-"))
        (folder / "client.py").write_text(PREFORK_CLIENT, encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--prefork-server", str(folder / "prefork.sock")],
            env=command_env(), stdin=subprocess.DEVNULL,
        )
        server = cls(folder, process)
        deadline = time.monotonic() + timeout
        while not server.socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("the prefork server did not start (its error is above)")
            time.sleep(0.05)
        return server

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def prefork_available() -> bool:
    """Linux only: macOS has no SOCK_SEQPACKET Unix sockets and frowns on fork after imports."""
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds")


def prefork_server(path: str) -> int:
    """The server of --prefork: import, listen, fork a child per request, reap the children."""
    import importlib

    # what most commands import first (importing runs no PyTorch operation, so no thread starts)
    for module in ("torch", "gptlab.cli.main", "gptlab.train.trainer", "gptlab.finetune.finetuner",
                   "gptlab.generate.sampler", "matplotlib.pyplot"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass

    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as listener:
        listener.bind(path)
        listener.listen(8)
        listener.settimeout(0.2)
        children: set[int] = set()
        while not stopping:
            for pid in list(children):  # reaped here, so their CPU time counts as this process's children's
                if os.waitpid(pid, os.WNOHANG)[0]:
                    children.discard(pid)
            try:
                conn, _ = listener.accept()
            except (TimeoutError, socket.timeout, InterruptedError):
                continue
            try:
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                request = json.loads(message)
            except (OSError, ValueError):  # a client that died before it asked: nothing to run
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:
                listener.close()
                _run_forked(conn, request, fds)  # never returns
            conn.close()
            for fd in fds:
                os.close(fd)
            children.add(pid)
        for pid in children:
            os.waitpid(pid, 0)
    return 0


def _run_forked(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the command, run it, send its exit code, exit."""
    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request["kind"] == "gptlab":
            from gptlab.cli.main import main

            sys.argv = ["gptlab", *request["argv"]]
            code = main(request["argv"])
        else:  # python -: the script comes on stdin
            sys.argv = ["-"]
            source = sys.stdin.read()
            exec(compile(source, "<stdin>", "exec"), {"__name__": "__main__"})  # noqa: S102 - the tutorial's own script
            code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - as an uncaught exception would: a traceback and code 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            conn.send(str(code).encode())
        finally:
            os._exit(code)


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", MPLBACKEND="Agg", COLUMNS="100", PYTHONIOENCODING="utf-8")
    env.pop("GPTLAB_API_KEY", None)
    return env


@dataclass
class CommandResult:
    command: str
    returncode: int
    seconds: float
    output: list[str]
    cpu_seconds: float | None = None  # CPU time of the command's processes (user + system), where known


@dataclass
class StepResult:
    step: Step
    commands: list[CommandResult] = field(default_factory=list)
    server: CommandResult | None = None
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (file under the page's folder, caption)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def children_cpu_seconds() -> float | None:
    """User + system CPU time of the finished child processes so far (None on Windows)."""
    try:
        import resource
    except ImportError:
        return None
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_command(text: str, workdir: Path, timeout: float, prefork: Prefork | None = None) -> CommandResult:
    start, cpu_start = time.monotonic(), children_cpu_seconds()
    try:
        proc = subprocess.run(
            ["bash", "-c", shell_prelude(prefork) + text], check=False, cwd=workdir, env=command_env(), timeout=timeout,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        returncode, raw = proc.returncode, proc.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as exc:
        returncode = 124
        raw = (exc.stdout or b"").decode("utf-8", "replace") + f"\n[timed out after {timeout:.0f} s]"
    cpu_end = children_cpu_seconds()
    cpu = None if cpu_start is None or cpu_end is None or prefork is not None else cpu_end - cpu_start
    return CommandResult(text, returncode, time.monotonic() - start, clean_output(raw, workdir), cpu)


def free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError("no free port")


class Server:
    """A command started in the background (``gptlab serve``) that answers ``/health`` when ready."""

    def __init__(self, text: str, port: int, workdir: Path) -> None:
        self.text, self.port, self.workdir = text, port, workdir
        self.log_path = workdir / f".server-{port}.log"
        self.start = time.monotonic()
        argv = shlex.split(text)
        if argv[0] != "gptlab":
            raise ValueError(f"a background command must be a gptlab command: {text}")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gptlab", *argv[1:]], cwd=workdir, env=command_env(),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with code {self.proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the server did not answer {url} within {timeout:.0f} s")

    def stop(self) -> CommandResult:
        """Stop it as Ctrl+C would, and return what it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        raw = self.log_path.read_text(encoding="utf-8", errors="replace")
        self.log_path.unlink(missing_ok=True)
        # The script's own readiness polls are not something a reader would see.
        lines = [line for line in clean_output(raw, self.workdir) if '"GET /health HTTP' not in line]
        return CommandResult(self.text, self.proc.returncode, time.monotonic() - self.start, lines)


def run_step(step: Step, workdir: Path, pictures_dir: Path, fast: bool, timeout: float,
             prefork: Prefork | None = None) -> StepResult:
    result = StepResult(step)
    for path, content in step.files:
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).write_text(content, encoding="utf-8")
    port = free_port(PORT) if step.server is not None else PORT
    with_port = (lambda text: text.replace(str(PORT), str(port))) if port != PORT else (lambda text: text)
    server = Server(with_port(step.server.to_run(fast)), port, workdir) if step.server is not None else None
    try:
        if server is not None:
            server.wait_ready(timeout=120)
        for command in step.commands:
            done = run_command(with_port(command.to_run(fast)), workdir, timeout, prefork)
            done.output = cut(done.output, command.head, command.tail)
            result.commands.append(done)
            if done.returncode != 0:
                result.error = f"`{done.command}` exited with code {done.returncode}"
                break
    except RuntimeError as exc:
        result.error = str(exc)
    finally:
        if server is not None:
            result.server = server.stop()
            result.server.output = cut(result.server.output, step.server.head, step.server.tail)
            if result.error is not None:  # the server's log says why
                result.commands.append(result.server)
    if result.ok:
        for source, caption in step.pictures:
            if not (workdir / source).is_file():
                result.error = f"{source} was not written"
                break
            name = f"{step.id}-{Path(source).name}"
            shutil.copyfile(workdir / source, pictures_dir / name)
            result.pictures.append((f"{pictures_dir.name}/{name}", caption))
    return result


# ---------------------------------------------------------------------------------------------
# Writing the page
# ---------------------------------------------------------------------------------------------


def code_block(lines: list[str] | str, lang: str = "") -> str:
    text = lines if isinstance(lines, str) else "\n".join(lines)
    fence = "````" if "```" in text else "```"
    return f"{fence}{lang}\n{text}\n{fence}"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s"


def machine() -> str:
    import torch  # only for the description of the machine

    cpu = platform.processor() or platform.machine()
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{platform.system()} on {os.cpu_count()} CPU cores ({cpu}){gpu}; Python "
        f"{platform.python_version()}, PyTorch {torch.__version__.split('+')[0]}"
    )


SHOW_TIME_FROM = 20.0  # seconds (of CPU time, where known): commands that take longer say how long they took


def took(done: CommandResult) -> str:
    """Its wall-clock time, and its CPU time when the two differ (the command waited for the cores)."""
    text = f"{duration(done.seconds)} here"
    if done.cpu_seconds is not None and done.cpu_seconds < 0.8 * done.seconds:
        text += f": {duration(done.cpu_seconds)} of CPU time, other work held the cores the rest of it"
    return text


def render_step(number: int, result: StepResult) -> str:
    step = result.step
    parts = [f"<!-- step: {step.id} -->", f"## {number}. {step.title}", step.intro]
    for path, content in step.files:
        parts += [f"`{path}`:", code_block(content.rstrip("\n"), "json" if path.endswith("json") else "")]
    if result.server is not None:
        parts += [code_block(result.server.command, "bash")]
    for index, done in enumerate(result.commands):
        if result.server is not None and index == 0:
            parts.append(f"In a second terminal, once it says `model {Path(RUN).name} ready`:")
        parts += [code_block(done.command, "bash")]
        if done.output:
            parts.append(code_block(done.output, "text"))
        if (done.seconds if done.cpu_seconds is None else done.cpu_seconds) >= SHOW_TIME_FROM:
            parts.append(f"*(This took {took(done)}.)*")
    if result.server is not None and result.ok:
        parts += ["Meanwhile, in the server's terminal (stopped with Ctrl+C at the end):",
                  code_block(result.server.output, "text")]
    parts += [f"![{caption}]({path})" for path, caption in result.pictures]
    if result.error is not None:
        parts.append(f"> **This step failed when the page was generated:** {result.error}.")
    if step.outro:
        parts.append(step.outro)
    return "\n\n".join(parts)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Windows
        return None


def save_results(path: Path, results: list[StepResult], fast: bool, total_seconds: float,
                 loads: tuple[float | None, float | None]) -> None:
    """Everything the page shows that came from running the commands, so that ``--render`` can
    write the page again (after an edit of the prose) without running them."""
    def command(done: CommandResult) -> dict:
        return {"command": done.command, "returncode": done.returncode, "seconds": done.seconds,
                "output": done.output, "cpu_seconds": done.cpu_seconds}

    path.write_text(json.dumps({
        "fast": fast, "total_seconds": total_seconds, "loads": loads, "machine": machine(),
        "steps": [{"id": r.step.id, "commands": [command(c) for c in r.commands],
                   "server": command(r.server) if r.server is not None else None,
                   "pictures": [path for path, _ in r.pictures], "error": r.error} for r in results],
    }, indent=1, ensure_ascii=False), encoding="utf-8")


def load_results(path: Path) -> tuple[list[StepResult], bool, float, tuple[float | None, float | None], str]:
    """The results ``save_results`` wrote, on today's ``STEPS`` (their prose may have changed, their
    commands must not: a changed command needs a new run)."""
    saved = json.loads(path.read_text(encoding="utf-8"))
    steps = {step.id: step for step in STEPS}
    results = []
    for entry in saved["steps"]:
        step = steps[entry["id"]]
        commands = [CommandResult(**c) for c in entry["commands"]]
        shown = [c.to_run(saved["fast"]) for c in step.commands]
        if [c.command for c in commands] != shown[: len(commands)]:
            raise SystemExit(f"{path}: the commands of step {step.id} changed since it ran; run it again")
        captions = [caption for _, caption in step.pictures]
        results.append(StepResult(
            step, commands, CommandResult(**entry["server"]) if entry["server"] else None,
            list(zip(entry["pictures"], captions, strict=True)), entry["error"],
        ))
    return results, saved["fast"], saved["total_seconds"], tuple(saved["loads"]), saved["machine"]


def render_page(results: list[StepResult], fast: bool, total_seconds: float, loads: tuple[float | None, float | None],
                machine_text: str | None = None) -> str:
    if fast:
        mode = ("> **Fast mode**: tiny settings (a 2-layer model trained for a few steps on 200 kB), "
                "used by `tests/test_tutorial.py` to check that every step still runs. The real "
                "tutorial is `docs/tutorial.md`, made with `--full`.")
    else:
        mode = ("Every command below was run, in this order, in a fresh empty folder by "
                "[`docs/make_tutorial.py`](make_tutorial.py); the outputs and pictures are what they "
                "printed and drew (progress bars removed, long outputs cut in the middle). Regenerate "
                "the page with `python docs/make_tutorial.py --full`.")
    busy = ""
    if None not in loads:
        busy = (f" Times are wall-clock; the 1-minute load average was {loads[0]:.1f} when the run started "
                f"and {loads[1]:.1f} when it ended (above {os.cpu_count()}, other work was competing for the cores).")
    train_step = 1 + next(i for i, step in enumerate(STEPS) if step.id == "train")
    header = f"""\
# From one neuron to GPT

This tutorial retraces, on a laptop, the path from Rosenblatt's perceptron to GPT: one neuron that
learns to see, the wall it hit, the hidden layers and backpropagation that got past it, and then a
real GPT trained from scratch on Python code, sampled one token at a time, opened up to look at its
attention and probabilities, prompted, fine-tuned, exported, counted, priced, and served over the
OpenAI API.

{mode}

It was generated on {machine_text or machine()}; the {len(results)} steps took {duration(total_seconds)} in all,
most of it training.{busy}

## Before you start

Install gptlab with its extras (PyTorch on the CPU is enough, no GPU needed):

```bash
bash scripts/install.sh dev
source .venv/bin/activate
```

Then work in an empty folder: the commands write their models and pictures under `runs/` and
`data/`, and the steps after step {train_step} use the model it trains.

## Contents

"""
    contents = "\n".join(f"{i}. [{r.step.title}](#{anchor(i, r.step.title)})" for i, r in enumerate(results, 1))
    body = "\n\n".join(render_step(i, r) for i, r in enumerate(results, 1))
    return f"{header}{contents}\n\n{body}\n"


def anchor(number: int, title: str) -> str:
    """GitHub's heading anchor for ``## {number}. {title}``."""
    text = f"{number}. {title}".lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--prefork-server"]:
        return prefork_server(argv[1])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--full", action="store_true", help="the real settings (several minutes of training)")
    mode.add_argument("--fast", action="store_true", help="tiny settings, about two minutes in all")
    parser.add_argument("--out", type=Path, default=DOCS, help="folder for tutorial.md and tutorial/*.png (default: docs/)")
    parser.add_argument("--workdir", type=Path, help="folder to run the commands in (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    parser.add_argument("--keep-going", action="store_true", help="go on after a failed step (the page says it failed)")
    parser.add_argument("--report", type=Path, help="also write a JSON summary of every step here")
    parser.add_argument("--timeout", type=float, help="seconds per command (default: 1800 full, 300 fast)")
    parser.add_argument("--save-results", type=Path, metavar="FILE",
                        help="also save every command's output here, for --render")
    parser.add_argument("--render", type=Path, metavar="FILE",
                        help="run nothing: write the page again from --save-results' FILE with today's prose "
                        "(the pictures stay as they are)")
    parser.add_argument("--prefork", action=argparse.BooleanOptionalAction, default=None,
                        help="start the gptlab commands from one process that has imported PyTorch, forked "
                        "for each (saves ~2 s of CPU per command; default: with --fast, where the OS can)")
    args = parser.parse_args(argv)
    timeout = args.timeout or (300.0 if args.fast else 1800.0)
    use_prefork = (args.fast if args.prefork is None else args.prefork) and prefork_available()

    out: Path = args.out.resolve()
    if args.render:
        results, fast, total, loads, machine_text = load_results(args.render)
        if fast != args.fast:
            parser.error(f"{args.render} was made with --{'fast' if fast else 'full'}")
        (out / "tutorial.md").write_text(render_page(results, fast, total, loads, machine_text), encoding="utf-8")
        print(f"wrote {out / 'tutorial.md'} from {args.render}", file=sys.stderr)
        return 0 if len(results) == len(STEPS) and all(r.ok for r in results) else 1
    pictures_dir = out / "tutorial"
    pictures_dir.mkdir(parents=True, exist_ok=True)
    for old in pictures_dir.glob("*.png"):
        old.unlink()
    workdir = args.workdir.resolve() if args.workdir else Path(tempfile.mkdtemp(prefix="gptlab-tutorial-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if any(workdir.iterdir()):
        parser.error(f"{workdir} is not empty (the run names in the page assume an empty folder)")
    print(f"running the tutorial's commands in {workdir}", file=sys.stderr)

    results: list[StepResult] = []
    start, load_at_start = time.monotonic(), load_average()
    prefork = None
    try:
        if use_prefork:
            try:
                prefork = Prefork.start()
            except (OSError, RuntimeError) as exc:  # e.g. a socket path too long for AF_UNIX
                print(f"--prefork is off: {exc}", file=sys.stderr)
        for step in STEPS:
            step_start = time.monotonic()
            result = run_step(step, workdir, pictures_dir, args.fast, timeout, prefork)
            results.append(result)
            status = "ok" if result.ok else f"FAILED: {result.error}"
            print(f"{step.id:12s} {time.monotonic() - step_start:6.1f} s  {status}", file=sys.stderr)
            if not result.ok:
                for done in result.commands[-1:]:
                    print("\n".join(done.output[-40:]), file=sys.stderr)
                if not args.keep_going:
                    break
    finally:
        if prefork is not None:
            prefork.stop()
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    total = time.monotonic() - start

    loads = (load_at_start, load_average())
    page = out / "tutorial.md"
    page.write_text(render_page(results, args.fast, total, loads), encoding="utf-8")
    if args.save_results:
        save_results(args.save_results, results, args.fast, total, loads)
    print(f"wrote {page} ({len(list(pictures_dir.glob('*.png')))} pictures) in {duration(total)}", file=sys.stderr)
    if args.report:
        args.report.write_text(json.dumps([
            {
                "id": r.step.id, "ok": r.ok, "error": r.error,
                "commands": [{"command": c.command, "returncode": c.returncode, "seconds": round(c.seconds, 1),
                              "cpu_seconds": None if c.cpu_seconds is None else round(c.cpu_seconds, 1)}
                             for c in r.commands],
                "pictures": [path for path, _ in r.pictures],
            }
            for r in results
        ], indent=2), encoding="utf-8")
    return 0 if len(results) == len(STEPS) and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
