"""The inspect pictures' layout rules, and the token texts they show."""

import numpy as np
import pytest

from gptlab.data.tokenizer import train_bpe_tokenizer
from gptlab.inspect import views as inspect
from gptlab.inspect.plots import _spread_labels, plot_embedding_pca, plot_lens
from gptlab.inspect.text import format_head_summary


def test_spread_labels_never_overlap():
    rng = np.random.default_rng(0)
    anchors = np.vstack([rng.normal(scale=3.0, size=(40, 2)), np.zeros((6, 2))])  # a tight cluster too
    sizes = np.column_stack([rng.uniform(5, 60, len(anchors)), np.full(len(anchors), 9.0)])
    placed = _spread_labels(anchors, sizes)
    boxes = np.column_stack([placed, placed + sizes])
    for i in range(len(boxes)):
        for j in range(i):
            a, b = boxes[i], boxes[j]
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (i, j)
    np.testing.assert_allclose(placed[:, 0], anchors[:, 0] + 3.0)  # each label starts at its point


def test_byte_level_tokens_read_as_bytes_not_replacement_characters():
    tok = train_bpe_tokenizer(["héllo wörld " * 50], vocab_size=300)
    lone = tok.encode("\u00e9")  # é is 0xC3 0xA9; in a 300-id vocabulary, maybe one merged token
    texts = inspect.token_texts(tok, range(tok.vocab_size))
    assert not any("\ufffd" in t for t in texts)
    byte_c3 = tok.backend.token_to_id("Ã")  # GPT-2's byte-level character for 0xC3
    assert texts[byte_c3] == "<0xC3>"
    assert "".join(inspect.token_texts(tok, lone)) in ("é", "<0xC3><0xA9>")
    assert inspect.token_texts(tok, tok.encode("hello world")) == [tok.decode([i]) for i in tok.encode("hello world")]
    assert "".join(inspect.token_texts(tok, tok.encode("hé"))) in ("hé", "h<0xC3><0xA9>")  # whole or in bytes


def test_one_hot_heads_have_entropy_zero_not_minus_zero():
    T = 4
    one_hot = np.zeros((T, T))
    one_hot[:, 0] = 1.0
    maps = inspect.AttentionMaps(tokens=list("abcd"), token_ids=list(range(T)), weights=one_hot[None, None])
    summary = format_head_summary(maps, [0], [0])
    assert "0.00" in summary and "-0.00" not in summary


def _lens(T, L=2):
    rng = np.random.default_rng(0)
    probs = np.sort(rng.uniform(size=(L + 1, T, 1)), axis=-1)
    return inspect.LogitLens(
        tokens=[f"t{i}" for i in range(T)],
        token_ids=list(range(T)),
        layers=["embed", *(f"layer {i}" for i in range(L))],
        top_ids=np.zeros((L + 1, T, 1), dtype=np.int64),
        top_tokens=[[[f"p{r}{i}"] for i in range(T)] for r in range(L + 1)],
        top_probs=probs,
        target_probs=np.zeros((L + 1, T - 1)),
    )


def test_a_long_lens_is_split_into_panels_of_readable_width(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    ten = plot_lens(_lens(10), tmp_path / "ten.png")
    long = plot_lens(_lens(28), tmp_path / "long.png", columns=12)  # 3 panels of 10, 10 and 8 positions
    with Image.open(ten) as a, Image.open(long) as b:
        assert b.size[0] < 1.1 * a.size[0]  # no wider than one panel of 10
        assert b.size[1] > 2.5 * a.size[1]  # three panels, one under the other


def test_embedding_picture_with_special_tokens(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    pca = inspect.EmbeddingPCA(
        tokens=["<|endoftext|>", "<|sep|>", "<|im_start|>", "a", "b", "<0xC3>"],
        token_ids=list(range(6)),
        coords=np.vstack([np.zeros((3, 2)) + 1e-3 * rng.normal(size=(3, 2)), rng.normal(size=(3, 2))]),
        explained_variance_ratio=np.array([0.5, 0.2]),
        method="svd",
    )
    path = plot_embedding_pca(pca, tmp_path / "pca.png", special_ids={0, 1, 2})
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("T", [6, 60])
def test_attention_grid_with_few_and_many_tokens(tmp_path, T):
    pytest.importorskip("matplotlib")
    from gptlab.inspect.plots import plot_attention

    rng = np.random.default_rng(0)
    w = np.tril(rng.uniform(size=(2, 2, T, T)))
    maps = inspect.AttentionMaps(tokens=[f"t{i}" for i in range(T)], token_ids=list(range(T)),
                                 weights=(w / w.sum(-1, keepdims=True)).astype(np.float32))
    assert plot_attention(maps, tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
