"""Tests of gptlab.inspect.views (and its text, plot, HTML and CLI views) on a tiny random GPT.

The model's weights are drawn larger than GPT-2's init so that attention is far from uniform and
the top tokens are well separated: a wrong scale, mask or transpose would show.
"""

import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gptlab.inspect import views as inspect
from gptlab.train.checkpoint import save_checkpoint
from gptlab.cli.main import main
from gptlab.model.config import GPTConfig
from gptlab.errors import GenerationError, TokenizerError
from gptlab.inspect.text import format_lens, head_statistics, printable
from gptlab.model.gpt import GPT
from gptlab.data.tokenizer import train_char_tokenizer

CORPUS = "def hello(world):\n    return world + 1  # <a> <b> & </script> $DATA\n"
TEXT = "def hello(world):\n    return"
BLOCK = 40


@pytest.fixture(scope="module")
def tokenizer():
    return train_char_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size + 3, block_size=BLOCK, n_layer=2, n_head=2,
                       n_embd=16, dropout=0.1)  # 3 padding rows the tokenizer does not know
    gpt = GPT(config)
    with torch.no_grad():
        for name, p in gpt.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.copy_(0.4 * torch.randn_like(p))
    return gpt.eval()


def ids_of(tokenizer, text):
    return torch.tensor([tokenizer.encode(text)], dtype=torch.long)


def no_hooks_left(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ---------------------------------------------------------------------------------------------
# attention


def test_attention_rows_sum_to_one_and_causal(model, tokenizer):
    maps = inspect.attention(model, tokenizer, TEXT)
    T = len(tokenizer.encode(TEXT))
    assert maps.weights.shape == (2, 2, T, T)
    assert maps.tokens == list(TEXT) and maps.token_ids == tokenizer.encode(TEXT)
    np.testing.assert_allclose(maps.weights.sum(axis=-1), 1.0, atol=1e-5)
    assert np.all(maps.weights[..., np.triu_indices(T, k=1)[0], np.triu_indices(T, k=1)[1]] == 0.0)
    assert np.all(maps.weights >= 0)
    assert maps.weights.max() > 0.5  # far from uniform: the test model is not trivial
    assert no_hooks_left(model)


def manual_attention(block, x, n_head):
    """softmax(q·kᵀ/√D) with a causal mask, in float64, written out by hand from the block input."""
    C = x.size(-1)
    D = C // n_head
    x = x[0].double()
    h = F.layer_norm(x, (C,), block.ln_1.weight.double(), block.ln_1.bias.double(), block.ln_1.eps)
    qkv = h @ block.attn.c_attn.weight.double().T + block.attn.c_attn.bias.double()  # (T, 3C)
    q, k, v = qkv[:, :C], qkv[:, C : 2 * C], qkv[:, 2 * C :]
    T = x.size(0)
    probs = torch.zeros(n_head, T, T, dtype=torch.float64)
    for head in range(n_head):
        cols = slice(head * D, (head + 1) * D)
        for i in range(T):
            scores = torch.stack([q[i, cols] @ k[j, cols] / math.sqrt(D) for j in range(i + 1)])
            e = torch.exp(scores - scores.max())
            probs[head, i, : i + 1] = e / e.sum()
    return probs, v


def test_attention_equals_manual_recomputation_and_sdpa_output(model, tokenizer):
    block_inputs, sdpa_outputs = {}, {}
    handles = []
    for i, block in enumerate(model.transformer.h):
        handles.append(block.register_forward_pre_hook(
            lambda m, args, i=i: block_inputs.__setitem__(i, args[0].detach().clone())))
        handles.append(block.attn.c_proj.register_forward_pre_hook(
            lambda m, args, i=i: sdpa_outputs.__setitem__(i, args[0].detach().clone())))
    try:
        maps = inspect.attention(model, tokenizer, TEXT)
    finally:
        for h in handles:
            h.remove()
    n_head, C = model.config.n_head, model.config.n_embd
    D = C // n_head
    for layer, block in enumerate(model.transformer.h):
        with torch.no_grad():
            probs, v = manual_attention(block, block_inputs[layer], n_head)
        np.testing.assert_allclose(maps.weights[layer], probs.numpy(), atol=2e-6)
        # what the model's SDPA produced is our probabilities times v, head by head
        captured = torch.from_numpy(maps.weights[layer]).double()
        mixed = torch.cat([captured[h] @ v[:, h * D : (h + 1) * D] for h in range(n_head)], dim=-1)
        np.testing.assert_allclose(sdpa_outputs[layer][0].numpy(), mixed.numpy(), atol=2e-5)


def test_capture_leaves_the_model_untouched(model, tokenizer):
    idx = ids_of(tokenizer, TEXT)
    with torch.no_grad():
        reference, _ = model(idx)
    model.train()  # dropout is on: capture must switch it off, then restore train mode
    try:
        seen = inspect.capture(model, idx[0].tolist())
        assert model.training
    finally:
        model.eval()
    assert torch.equal(seen.logits, reference[0])
    assert seen.attention.shape == (2, 2, idx.size(1), idx.size(1))
    assert seen.residual.shape == (3, idx.size(1), model.config.n_embd)
    with torch.no_grad():
        assert torch.equal(model(idx)[0], reference)
    assert no_hooks_left(model)


def test_hooks_removed_when_forward_raises(model, tokenizer, monkeypatch):
    def broken(x):
        raise RuntimeError("boom")

    monkeypatch.setattr(model.transformer.ln_f, "forward", broken)
    model.train()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            inspect.capture(model, tokenizer.encode(TEXT))
        assert model.training
    finally:
        model.eval()
    assert no_hooks_left(model)


def test_top_attended(model, tokenizer):
    maps = inspect.attention(model, tokenizer, TEXT)
    top = maps.top_attended(7, layer=1, head=0, k=3)
    row = maps.weights[1, 0, 7]
    assert [j for j, _ in top] == list(np.argsort(-row, kind="stable")[:3])
    assert all(j <= 7 for j, _ in top)
    assert top[0][1] == pytest.approx(row.max())


# ---------------------------------------------------------------------------------------------
# next token, surprisal, logit lens


def test_next_token_matches_softmax_of_model_logits(model, tokenizer):
    pred = inspect.next_token(model, tokenizer, TEXT, k=5)
    with torch.no_grad():
        logits, _ = model(ids_of(tokenizer, TEXT))
    expected = torch.softmax(logits[0, -1].double(), dim=-1).numpy()
    assert pred.probs.shape == (model.config.vocab_size,)
    assert pred.probs.sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(pred.probs, expected, atol=1e-6)
    assert pred.top_ids == list(np.argsort(-expected)[:5])
    np.testing.assert_allclose(pred.top_probs, np.sort(expected)[::-1][:5], atol=1e-6)
    assert pred.top_tokens == [inspect.token_texts(tokenizer, [i])[0] for i in pred.top_ids]
    with pytest.raises(GenerationError):
        inspect.next_token(model, tokenizer, TEXT, k=0)


def test_surprisal_agrees_with_the_model_loss(model, tokenizer):
    s = inspect.surprisal(model, tokenizer, TEXT)
    idx = ids_of(tokenizer, TEXT)
    with torch.no_grad():
        _, loss = model(idx[:, :-1], targets=idx[:, 1:])
    T = idx.size(1)
    assert s.nats.shape == s.bits.shape == s.probs.shape == (T - 1,)
    assert s.mean_nats == pytest.approx(loss.item(), rel=1e-5)
    assert s.perplexity == pytest.approx(math.exp(loss.item()), rel=1e-5)
    np.testing.assert_allclose(s.bits, s.nats / math.log(2))
    np.testing.assert_allclose(s.probs, np.exp(-s.nats))
    assert s.mean_bits == pytest.approx(loss.item() / math.log(2), rel=1e-5)
    with pytest.raises(GenerationError, match="at least 2 tokens"):
        inspect.surprisal(model, tokenizer, "d")


def test_logit_lens_last_layer_is_the_model_and_first_is_the_embeddings(model, tokenizer):
    lens = inspect.logit_lens(model, tokenizer, TEXT, k=3)
    idx = ids_of(tokenizer, TEXT)
    T = idx.size(1)
    assert lens.layers == ["embed", "layer 0", "layer 1"]
    assert lens.top_ids.shape == lens.top_probs.shape == (3, T, 3)
    assert lens.target_probs.shape == (3, T - 1)
    with torch.no_grad():
        logits, _ = model(idx)
        probs = torch.softmax(logits[0].double(), dim=-1)
        top = torch.topk(probs, 3)
        # row 0 by hand: embeddings → ln_f → tied LM head
        x = model.transformer.wte(idx[0]) + model.transformer.wpe(torch.arange(T))
        embed_probs = torch.softmax((model.transformer.ln_f(x) @ model.transformer.wte.weight.T).double(), -1)
    assert np.array_equal(lens.top_ids[-1], top.indices.numpy())
    np.testing.assert_allclose(lens.top_probs[-1], top.values.numpy(), atol=1e-6)
    np.testing.assert_allclose(lens.target_probs[-1], inspect.surprisal(model, tokenizer, TEXT).probs, atol=1e-6)
    assert np.array_equal(lens.top_ids[0, :, 0], embed_probs.argmax(-1).numpy())
    np.testing.assert_allclose(lens.top_probs[0, :, 0], embed_probs.max(-1).values.numpy(), atol=1e-6)
    assert lens.top_tokens[-1][0][0] == inspect.token_texts(tokenizer, [int(lens.top_ids[-1, 0, 0])])[0]
    assert np.all(np.diff(lens.top_probs, axis=-1) <= 0)


def test_text_errors(model, tokenizer):
    with pytest.raises(GenerationError, match="empty"):
        inspect.attention(model, tokenizer, "")
    with pytest.raises(GenerationError, match="context of 40"):
        inspect.logit_lens(model, tokenizer, "x" * (BLOCK + 1))
    assert inspect.attention(model, tokenizer, "d" * BLOCK).weights.shape[-1] == BLOCK  # exactly full fits


def test_token_texts_show_bytes_and_padding(model, tokenizer):
    ids = tokenizer.encode("é")  # not in the corpus: two byte-fallback ids
    assert inspect.token_texts(tokenizer, ids) == ["<0xC3>", "<0xA9>"]
    assert inspect.token_texts(tokenizer, [tokenizer.vocab_size]) == [f"<id {tokenizer.vocab_size}>"]


# ---------------------------------------------------------------------------------------------
# embeddings


def test_nearest_tokens(model, tokenizer):
    W = model.transformer.wte.weight.detach().double().numpy()[: tokenizer.vocab_size]
    for token in ["d", "e", " ", "\n"]:
        neighbours = inspect.nearest_tokens(model, tokenizer, token, k=4)
        query = tokenizer.encode(token)[0]
        assert neighbours[0].token_id == query and neighbours[0].token == token
        assert neighbours[0].similarity == pytest.approx(1.0, abs=1e-9)
        cos = W @ W[query] / (np.linalg.norm(W, axis=1) * np.linalg.norm(W[query]))
        assert [n.token_id for n in neighbours] == list(np.argsort(-cos)[:4])
        np.testing.assert_allclose([n.similarity for n in neighbours], np.sort(cos)[::-1][:4], atol=1e-9)
    others = inspect.nearest_tokens(model, tokenizer, "d", k=3, exclude_self=True)
    assert tokenizer.encode("d")[0] not in [n.token_id for n in others] and len(others) == 3
    with pytest.raises(TokenizerError, match="2 tokens"):
        inspect.nearest_tokens(model, tokenizer, "de")
    with pytest.raises(TokenizerError, match="outside"):
        inspect.nearest_tokens(model, tokenizer, 10**6)


def test_embedding_pca_shapes_and_methods_agree(model, tokenizer):
    a = inspect.embedding_pca(model, tokenizer, n=30, method="sklearn")
    b = inspect.embedding_pca(model, tokenizer, n=30, method="svd")
    assert a.method == "sklearn" and b.method == "svd"
    assert a.coords.shape == b.coords.shape == (30, 2)
    assert a.token_ids == list(range(30))
    np.testing.assert_allclose(a.explained_variance_ratio, b.explained_variance_ratio, atol=1e-9)
    for axis in range(2):  # the same axes up to sign
        sign = np.sign(a.coords[:, axis] @ b.coords[:, axis])
        np.testing.assert_allclose(a.coords[:, axis], sign * b.coords[:, axis], atol=1e-9)
    np.testing.assert_allclose(b.coords.mean(axis=0), 0.0, atol=1e-9)
    X = model.transformer.wte.weight.detach().double().numpy()[:30]
    total = ((X - X.mean(axis=0)) ** 2).sum()
    np.testing.assert_allclose((b.coords**2).sum(axis=0) / total, b.explained_variance_ratio, rtol=1e-9)
    assert 1 >= b.explained_variance_ratio[0] >= b.explained_variance_ratio[1] > 0
    chosen = inspect.embedding_pca(model, tokenizer, tokens=["d", "e", "d", "f", " "])
    assert chosen.tokens == ["d", "e", "f", " "] and chosen.coords.shape == (4, 2)
    with pytest.raises(TokenizerError, match="at least 2"):
        inspect.embedding_pca(model, tokenizer, tokens=["d"])


# ---------------------------------------------------------------------------------------------
# text tables


def test_printable_and_lens_table_width(model, tokenizer):
    assert printable(" \n\tx\x01") == "␣\\n\\tx\\x01"
    assert printable("") == "∅"
    lens = inspect.logit_lens(model, tokenizer, TEXT)
    table = format_lens(lens, max_width=60)
    blocks = table.split("\n\n")
    assert len(blocks) > 1
    assert all(len(line) <= 60 for line in table.splitlines())
    for block in blocks:  # every block has the header and one line per layer
        assert [line.split()[0] for line in block.splitlines()][1:] == ["embed", "layer", "layer"]
    markdown = format_lens(lens, markdown=True)
    assert markdown.count("\n") == 1 + 3 and markdown.startswith("| layer |")


def test_head_statistics_recognise_simple_heads():
    T = 5
    self_head = np.eye(T)
    prev_head = np.eye(T, k=-1)
    prev_head[0, 0] = 1.0
    first_head = np.zeros((T, T))
    first_head[:, 0] = 1.0
    maps = inspect.AttentionMaps(tokens=list("abcde"), token_ids=list(range(T)),
                                 weights=np.stack([self_head, prev_head, first_head])[None])
    stats = head_statistics(maps)
    np.testing.assert_allclose(stats["self"][0], [1.0, 1 / T, 1 / T])
    np.testing.assert_allclose(stats["previous"][0], [0.0, 1.0, 1 / (T - 1)])  # query 1 reads token 0
    np.testing.assert_allclose(stats["first"][0], [1 / T, 2 / T, 1.0])  # early queries: first = self/previous
    np.testing.assert_allclose(stats["distance"][0], [0.0, (T - 1) / T, np.mean(np.arange(T))])
    np.testing.assert_allclose(stats["entropy_bits"][0], [0.0, 0.0, 0.0])
    assert not np.any(np.signbit(stats["entropy_bits"]))  # printed as 0.00, never -0.00


# ---------------------------------------------------------------------------------------------
# pictures and the page


class StrictTags(HTMLParser):
    """Collects script contents and checks that every non-void element is closed in order."""

    VOID = frozenset({"meta", "br", "img", "input", "hr", "link"})

    def __init__(self):
        super().__init__()
        self.stack, self.scripts, self.errors, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1][0] != tag:
            self.errors.append(f"unexpected </{tag}>")
            return
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1][0] == "script":
            self.scripts.append((self.stack[-1][1], data))
        else:
            self.text.append(data)


def parse_page(page):
    parser = StrictTags()
    parser.feed(page)
    parser.close()
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    return parser


def test_pictures_are_written(model, tokenizer, tmp_path):
    pytest.importorskip("matplotlib")
    from gptlab.inspect import plots as inspect_plots

    maps = inspect.attention(model, tokenizer, TEXT)
    paths = [
        inspect_plots.plot_attention(maps, tmp_path / "a" / "attention.png"),
        inspect_plots.plot_attention(maps, tmp_path / "one.png", layers=[1], heads=[0]),
        inspect_plots.plot_next_token(inspect.next_token(model, tokenizer, TEXT, k=4), tmp_path / "next.png"),
        inspect_plots.plot_lens(inspect.logit_lens(model, tokenizer, TEXT), tmp_path / "lens.png"),
        inspect_plots.plot_embedding_pca(inspect.embedding_pca(model, tokenizer, n=20), tmp_path / "pca.png"),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000, path


def test_attention_page_embeds_the_data_and_escapes_tokens(model, tokenizer, tmp_path):
    from gptlab.inspect.html import write_attention_html

    text = "a</script><b>&$DATA"
    maps = inspect.attention(model, tokenizer, text)
    path = write_attention_html(maps, tmp_path / "page.html", title="<i>title</i>")
    page = path.read_text(encoding="utf-8")
    parser = parse_page(page)
    assert "http://" not in page and "https://" not in page and "src=" not in page  # nothing fetched
    data_scripts = [body for attrs, body in parser.scripts if attrs.get("type") == "application/json"]
    assert len(data_scripts) == 1 and len([s for s in parser.scripts if not s[0]]) == 1
    data = json.loads(data_scripts[0])
    assert data["tokens"] == list(text) and data["n_layer"] == 2 and data["n_head"] == 2
    T = len(text)
    for layer in range(2):
        for head in range(2):
            rows = data["weights"][layer][head]
            assert [len(r) for r in rows] == list(range(1, T + 1))
            full = np.zeros((T, T))
            for i, r in enumerate(rows):
                full[i, : i + 1] = r
            np.testing.assert_allclose(full, maps.weights[layer, head], atol=5e-5)
    shown = "".join(parser.text)
    assert "<i>title</i>" in shown  # escaped, so it is text, not markup
    for token in ["a", "&", "<", "/", "$"]:
        assert f'>{token.replace("&", "&amp;").replace("<", "&lt;")}</span>' in page


def test_attention_page_script_is_valid_javascript(model, tokenizer, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    from gptlab.inspect.html import attention_html

    parser = parse_page(attention_html(inspect.attention(model, tokenizer, TEXT)))
    code = next(body for attrs, body in parser.scripts if not attrs)
    script = tmp_path / "page.js"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run([node, "--check", str(script)], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_attention_page_in_a_browser(model, tokenizer, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from gptlab.inspect.html import write_attention_html

    maps = inspect.attention(model, tokenizer, TEXT)
    path = write_attention_html(maps, tmp_path / "page.html")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable) if executable else p.chromium.launch()
        except sync_api.Error as exc:  # no browser installed here
            pytest.skip(f"no browser: {exc}")
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(path.as_uri())
            query = 9
            page.locator(f'#tokens .tok[data-i="{query}"]').hover()
            page.select_option("#layer", "1")
            page.select_option("#head", "0")
            shown = page.eval_on_selector_all("#tokens .tok", "els => els.map(e => Number(e.dataset.weight))")
            np.testing.assert_allclose(shown, maps.weights[1, 0, query], atol=1e-4)
            assert f"token {query}" in page.inner_text("#detail")
            assert page.locator("#grid td").count() == 2 * 3  # 2 layers × (2 heads + mean)
            page.check("#relative")  # shading changes, the weights shown do not
            again = page.eval_on_selector_all("#tokens .tok", "els => els.map(e => Number(e.dataset.weight))")
            assert again == shown
            page.locator("#grid td").nth(3 * 1 + 2).click()  # layer 1, mean of heads
            assert page.input_value("#head") == "mean"
            meaned = page.eval_on_selector_all("#tokens .tok", "els => els.map(e => Number(e.dataset.weight))")
            np.testing.assert_allclose(meaned, maps.weights[1, :, query].mean(axis=0), atol=1e-4)
            assert not errors, errors
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def run_dir(model, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "run"
    save_checkpoint(path, model, tokenizer, step=1)
    return path


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments):
    assert code == 1
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith("gptlab inspect: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_attention(run_dir, tmp_path, capsys, model, tokenizer):
    out = tmp_path / "att"
    code, stdout, err = run_cli(capsys, "inspect", "attention", str(run_dir), TEXT, "--out", str(out),
                                "--device", "cpu")
    assert code == 0, err
    assert "0:d 1:e 2:f 3:␣ 4:h" in stdout and ("mostly" in stdout or "spread" in stdout)
    assert (out / "attention.png").stat().st_size > 0 and (out / "attention.html").stat().st_size > 0
    assert "attention.html" in err

    code, stdout, err = run_cli(capsys, "inspect", "attention", str(run_dir), TEXT, "--out", str(out),
                                "--token", "-1", "--layer", "1", "--device", "cpu")
    assert code == 0, err
    maps = inspect.attention(model, tokenizer, TEXT)
    last = len(maps.tokens) - 1
    assert f"token {last} (n) attends most to:" in stdout
    rows = [line.split() for line in stdout.splitlines() if re.match(r"\s+1\s+[01]\s", line)]
    assert [r[1] for r in rows] == ["0", "1"]  # layer 1 only, both heads
    for row, head in zip(rows, [0, 1]):
        best, weight = maps.top_attended(last, 1, head, 1)[0]
        assert row[2] == f"{best}:{printable(maps.tokens[best])}" and row[3] == f"{weight:.2f}"


def test_cli_next_lens_embeddings(run_dir, tmp_path, capsys, model, tokenizer):
    out = tmp_path / "o"
    code, stdout, err = run_cli(capsys, "inspect", "next", str(run_dir), TEXT, "--top-k", "3",
                                "--out", str(out), "--device", "cpu")
    assert code == 0, err
    pred = inspect.next_token(model, tokenizer, TEXT, k=3)
    assert f"1  {printable(pred.top_tokens[0])}" in stdout
    s = inspect.surprisal(model, tokenizer, TEXT)
    assert f"perplexity {s.perplexity:.2f}" in stdout
    assert (out / "next_token.png").stat().st_size > 0

    code, stdout, err = run_cli(capsys, "inspect", "next", str(run_dir), "d", "--out", str(out))
    assert code == 0 and "no surprisal" in stdout
    assert "next token after 1 token (the last one: d)" in stdout

    code, stdout, err = run_cli(capsys, "inspect", "lens", str(run_dir), "def h", "--device", "cpu")
    assert code == 0, err
    lines = stdout.splitlines()
    assert any(line.startswith("layer") and "0:d→" in line and "4:h→" in line for line in lines)
    body = [line.split()[:2] for line in lines if line.startswith(("embed", "layer ")) and "→" not in line]
    assert [row[0] for row in body] == ["embed", "layer", "layer"] and body[2][1] == "1"

    code, stdout, err = run_cli(capsys, "inspect", "lens", str(run_dir), "def h", "--markdown",
                                "--out", str(out))
    assert code == 0, err
    assert "| layer |" in stdout and (out / "lens.md").exists() and (out / "lens.png").stat().st_size > 0

    code, stdout, err = run_cli(capsys, "inspect", "embeddings", str(run_dir), "--token", "e", "--k", "4",
                                "--n", "20", "--out", str(out))
    assert code == 0, err
    expected = inspect.nearest_tokens(model, tokenizer, "e", 4, exclude_self=True)
    assert f"1  {printable(expected[0].token)}" in stdout and "PCA of 20 token embeddings" in stdout
    assert (out / "embeddings_pca.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["attention", "{run}", TEXT, "--layer", "2"], ["--layer 2", "the model has 2 layers (0..1)"]),
        (["attention", "{run}", TEXT, "--head", "-1"], ["--head -1"]),
        (["attention", "{run}", "def", "--token", "3"], ["--token 3", "the text is 3 tokens (-3..2)"]),
        (["attention", "{run}", "x" * (BLOCK + 1)], ["41 tokens", "context of 40"]),
        (["next", "{run}", ""], ["empty"]),
        (["next", "{run}", TEXT, "--top-k", "0"], ["--top-k"]),
        (["lens", "{missing}", TEXT], ["no such run"]),
        (["embeddings", "{run}", "--token", "de"], ["'de' is 2 tokens"]),
    ],
)
def test_cli_errors(run_dir, tmp_path, capsys, args, fragments):
    args = [a.format(run=run_dir, missing=tmp_path / "nope") for a in args]
    code, _, err = run_cli(capsys, "inspect", *args, "--device", "cpu")
    assert_one_line_error(code, err, *fragments)


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inspect", "attention", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "--token" in out and "attention.html" in out
