"""An interactive, standalone HTML page of attention maps: one file, inline CSS and JavaScript, the
data embedded as JSON, nothing fetched from the network.

Hover over a token to see what it attends to in the chosen layer and head (the other tokens are
shaded by their weight); click it to pin it. Below: every (layer, head) for that token at once
(click a cell to choose it), and the full heat map of the chosen head.
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

from gptlab.inspect.views import AttentionMaps
from gptlab.inspect.text import printable

logger = logging.getLogger(__name__)

DECIMALS = 4  # weights are rounded in the page: 4 decimals are plenty for shading and reading
LARGE_PAGE_VALUES = 5_000_000


def attention_page_data(maps: AttentionMaps) -> dict:
    """The JSON embedded in the page: tokens, shape, and for each layer, head and query ``i`` the
    weights of keys ``0..i`` (the causal lower triangle; the rest is zero)."""
    weights = maps.weights.round(DECIMALS)
    T = len(maps.tokens)
    return {
        "tokens": list(maps.tokens),
        "token_ids": [int(i) for i in maps.token_ids],
        "n_layer": int(maps.n_layer),
        "n_head": int(maps.n_head),
        "weights": [[[weights[layer, head, i, : i + 1].tolist() for i in range(T)]
                     for head in range(maps.n_head)] for layer in range(maps.n_layer)],
    }


def _script_json(data: dict) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' can close the tag or open a comment."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def attention_html(maps: AttentionMaps, title: str = "Attention") -> str:
    """The page as a string (see the module docstring)."""
    T = len(maps.tokens)
    values = maps.n_layer * maps.n_head * T * (T + 1) // 2
    if values > LARGE_PAGE_VALUES:
        logger.warning("the attention page embeds %s weights: it will be large and slow", f"{values:,}")
    spans = "".join(
        f'<span class="tok" data-i="{i}" title="{i}: {html.escape(printable(t), quote=True)}">'
        f"{html.escape(printable(t))}</span>"
        for i, t in enumerate(maps.tokens)
    )
    values_by_name = {
        "TITLE": html.escape(title),
        "SUBTITLE": html.escape(f"{T} tokens, {maps.n_layer} layers × {maps.n_head} heads"),
        "TOKENS": spans,
        "DATA": _script_json(attention_page_data(maps)),
    }
    # one pass, so that a token spelling "$DATA" is never substituted itself
    return re.sub(r"\$(TITLE|SUBTITLE|TOKENS|DATA)", lambda m: values_by_name[m.group(1)], _PAGE)


def write_attention_html(maps: AttentionMaps, path: str | Path, title: str = "Attention") -> Path:
    """Write :func:`attention_html` to ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(attention_html(maps, title), encoding="utf-8")
    return path


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$TITLE</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
h1 { margin-bottom: 0.1em; }
.sub, .help { color: #666; margin-top: 0.2em; }
#controls { margin: 1em 0; }
#controls select { margin-right: 1.2em; }
#tokens { font-family: ui-monospace, monospace; font-size: 18px; line-height: 2.2; }
.tok { padding: 3px 2px; margin: 1px; border-radius: 3px; cursor: pointer; border: 2px solid transparent;
       white-space: pre; }
.tok.query { border-color: #d62728; }
.tok.pinned { border-style: dashed; }
#detail { font-family: ui-monospace, monospace; margin: 0.8em 0; min-height: 1.4em; }
table#grid { border-collapse: collapse; font-size: 12px; }
#grid td, #grid th { border: 1px solid #ddd; padding: 3px 5px; vertical-align: top; }
#grid td { cursor: pointer; }
#grid td.chosen { outline: 2px solid #d62728; }
.strip { display: flex; gap: 1px; margin-bottom: 2px; }
.strip i { display: block; width: 7px; height: 12px; border: 1px solid #eee; }
.top { font-family: ui-monospace, monospace; white-space: pre; }
#heatwrap { position: relative; display: inline-block; }
#tip { position: absolute; pointer-events: none; background: #222; color: #fff; padding: 2px 6px;
       border-radius: 3px; font-size: 12px; font-family: ui-monospace, monospace; display: none;
       white-space: pre; }
</style>
</head>
<body>
<h1>$TITLE</h1>
<p class="sub">$SUBTITLE</p>
<p class="help">Hover over a token to see what it attends to (darker = more weight); click it to pin
it, click again to unpin. A token only attends to itself and earlier tokens. Layers and heads are
numbered from 0.</p>
<div id="controls">
<label>Layer <select id="layer"></select></label>
<label>Head <select id="head"></select></label>
<label><input type="checkbox" id="relative"> shade relative to the strongest weight of each row</label>
</div>
<div id="tokens">$TOKENS</div>
<div id="detail"></div>
<h2>Every layer and head, for the selected token</h2>
<p class="help">Each cell shades the tokens by the weight the selected token gives them and lists the
top three. Click a cell to choose that layer and head.</p>
<table id="grid"></table>
<h2>Heat map of the chosen layer and head</h2>
<p class="help">Row = query (the token attending), column = key (the token attended to). Hover for
values; click a row to select its token.</p>
<div id="heatwrap"><canvas id="heat"></canvas><div id="tip"></div></div>
<script type="application/json" id="attention-data">$DATA</script>
<script>
"use strict";
const D = JSON.parse(document.getElementById("attention-data").textContent);
const T = D.tokens.length, L = D.n_layer, H = D.n_head;
const state = { layer: 0, head: 0, query: T - 1, pinned: false, relative: false };
const VISIBLE = { " ": "\\u2423", "\\n": "\\\\n", "\\t": "\\\\t", "\\r": "\\\\r" };
function printable(s) {
  const out = Array.from(s, c => VISIBLE[c] !== undefined ? VISIBLE[c] : c).join("");
  return out === "" ? "\\u2205" : out;
}
// weight that query i gives key j; head "mean" averages the heads of the layer
function weight(l, h, i, j) {
  if (j > i) return 0;
  if (h === "mean") { let s = 0; for (let k = 0; k < H; k++) s += D.weights[l][k][i][j]; return s / H; }
  return D.weights[l][h][i][j];
}
function row(l, h, i) { const r = []; for (let j = 0; j < T; j++) r.push(weight(l, h, i, j)); return r; }
function topK(r, k) {
  return r.map((w, j) => [j, w]).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, k);
}
function colour(w, max) {
  const a = state.relative && max > 0 ? w / max : w;
  return "rgba(31, 119, 180, " + Math.min(1, a).toFixed(3) + ")";
}
function rowMax(r) { return Math.max.apply(null, r); }
function headName(h) { return h === "mean" ? "mean of heads" : "head " + h; }

const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
for (let l = 0; l < L; l++) layerSel.add(new Option(String(l), String(l)));
for (let h = 0; h < H; h++) headSel.add(new Option(String(h), String(h)));
headSel.add(new Option("mean", "mean"));
layerSel.onchange = () => { state.layer = Number(layerSel.value); render(); };
headSel.onchange = () => { state.head = headSel.value === "mean" ? "mean" : Number(headSel.value); render(); };
document.getElementById("relative").onchange = ev => { state.relative = ev.target.checked; render(); };

const spans = Array.from(document.querySelectorAll("#tokens .tok"));
spans.forEach((el, i) => {
  el.addEventListener("mouseenter", () => { if (!state.pinned) { state.query = i; render(); } });
  el.addEventListener("click", () => {
    state.pinned = !(state.pinned && state.query === i);
    state.query = i; render();
  });
});

function renderTokens() {
  const r = row(state.layer, state.head, state.query), max = rowMax(r);
  spans.forEach((el, j) => {
    el.style.background = colour(r[j], max);
    el.style.color = (state.relative ? r[j] / max : r[j]) > 0.55 ? "#fff" : "";
    el.dataset.weight = r[j].toFixed(4);
    el.classList.toggle("query", j === state.query);
    el.classList.toggle("pinned", j === state.query && state.pinned);
  });
  const top = topK(r, 3).map(([j, w]) => j + ":" + printable(D.tokens[j]) + " " + w.toFixed(3)).join("   ");
  document.getElementById("detail").textContent =
    "token " + state.query + " \\u201c" + printable(D.tokens[state.query]) + "\\u201d, layer " + state.layer +
    ", " + headName(state.head) + " attends most to:   " + top;
}

function renderGrid() {
  const grid = document.getElementById("grid");
  grid.textContent = "";
  const head = grid.insertRow();
  head.appendChild(document.createElement("th"));
  const heads = [];
  for (let h = 0; h < H; h++) heads.push(h);
  heads.push("mean");
  heads.forEach(h => { const th = document.createElement("th"); th.textContent = headName(h); head.appendChild(th); });
  for (let l = 0; l < L; l++) {
    const tr = grid.insertRow();
    const th = document.createElement("th"); th.textContent = "layer " + l; tr.appendChild(th);
    heads.forEach(h => {
      const td = tr.insertCell();
      const r = row(l, h, state.query), max = rowMax(r);
      const strip = document.createElement("div"); strip.className = "strip";
      for (let j = 0; j <= state.query; j++) {
        const box = document.createElement("i");
        box.style.background = colour(r[j], max);
        box.title = j + ": " + printable(D.tokens[j]) + " " + r[j].toFixed(3);
        strip.appendChild(box);
      }
      const top = document.createElement("div"); top.className = "top";
      top.textContent = topK(r, 3).map(([j, w]) => printable(D.tokens[j]) + " " + w.toFixed(2)).join("\\n");
      td.append(strip, top);
      td.classList.toggle("chosen", l === state.layer && h === state.head);
      td.onclick = () => {
        state.layer = l; state.head = h;
        layerSel.value = String(l); headSel.value = String(h); render();
      };
    });
  }
}

const canvas = document.getElementById("heat"), tip = document.getElementById("tip");
const cell = Math.max(3, Math.min(24, Math.floor(640 / T)));
canvas.width = canvas.height = cell * T;
function renderHeat() {
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < T; i++) {
    const r = row(state.layer, state.head, i), max = rowMax(r);
    for (let j = 0; j <= i; j++) {
      ctx.fillStyle = colour(r[j], max);
      ctx.fillRect(j * cell, i * cell, cell, cell);
    }
  }
  ctx.strokeStyle = "#d62728"; ctx.lineWidth = 2;
  ctx.strokeRect(1, state.query * cell + 1, (state.query + 1) * cell - 2, cell - 2);
}
function cellAt(ev) {
  const box = canvas.getBoundingClientRect();
  return [Math.floor((ev.clientY - box.top) / cell), Math.floor((ev.clientX - box.left) / cell)];
}
canvas.addEventListener("mousemove", ev => {
  const [i, j] = cellAt(ev);
  if (i < 0 || j < 0 || i >= T || j >= T) { tip.style.display = "none"; return; }
  tip.textContent = i + ":" + printable(D.tokens[i]) + " \\u2192 " + j + ":" + printable(D.tokens[j]) + "  " +
    weight(state.layer, state.head, i, j).toFixed(4);
  tip.style.left = (j * cell + cell + 8) + "px"; tip.style.top = (i * cell) + "px";
  tip.style.display = "block";
});
canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
canvas.addEventListener("click", ev => {
  const [i] = cellAt(ev);
  if (i >= 0 && i < T) { state.query = i; state.pinned = true; render(); }
});

function render() { renderTokens(); renderGrid(); renderHeat(); }
render();
</script>
</body>
</html>
"""
