// gptlab playground: calls the server's own OpenAI-compatible API (/v1), streams the answer over
// server-sent events (fetch + ReadableStream), and colours each generated token by its probability,
// with the most likely alternatives on hover (from the API's logprobs). The Inspect panel shows the
// attention and the token probabilities of the current text (POST /v1/inspect, a gptlab extension).
// No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  model: null,
  contextLength: 1024,
  abort: null,
  conversation: [], // chat mode: {role, content}
  tokens: [], // the answer being shown: {text, logprob, top: [{token, logprob}]}
  text: "", // the answer's text as streamed (a stop string may cut it inside a token)
  prefix: "", // completion mode: the prompt shown before the answer
  chunks: 0, // SSE chunks received for the current answer (tests read it)
};
window.playground = state;

// ---- settings ---------------------------------------------------------------------------------

function mode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function apiKey() {
  return $("api-key").value.trim();
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (apiKey()) h.Authorization = "Bearer " + apiKey();
  return h;
}

function bindSlider(id, show) {
  const input = $(id);
  const output = $(id + "-value");
  const update = () => { output.textContent = show(Number(input.value)); };
  input.addEventListener("input", update);
  update();
}

function samplingFields() {
  const fields = {
    model: state.model || undefined,
    temperature: Number($("temperature").value),
    top_p: Number($("top-p").value),
    stream: true,
    stream_options: { include_usage: true },
  };
  const topK = Number($("top-k").value);
  if (topK > 0) fields.top_k = topK;
  if ($("seed").value !== "") fields.seed = Math.trunc(Number($("seed").value));
  const stop = $("stop").value.replace(/\\n/g, "\n").replace(/\\t/g, "\t");
  if (stop) fields.stop = [stop];
  return fields;
}

// max_tokens for a request: the slider's value, capped by what the prompt leaves of the context
// (POST /tokenize counts the prompt's tokens as the server will: a chat's whole conversation);
// undefined leaves it out, and the server generates up to the end of the context. That is what
// "auto" (0) asks for, and what a prompt that fills the context gets (the server's 400 then says so).
async function maxTokensFor(input) {
  const wanted = Number($("max-tokens").value);
  state.capped = null;
  if (wanted === 0) return undefined;
  try {
    const response = await fetch("/tokenize", { method: "POST", headers: headers(),
                                                body: JSON.stringify({ model: state.model || undefined, ...input }) });
    if (!response.ok) return wanted; // the generation request reports the problem
    const { count, max_model_len: context } = await response.json();
    const left = context - count;
    if (left < 1) return undefined;
    if (left < wanted) state.capped = left;
    return Math.min(wanted, left);
  } catch (e) {
    return wanted;
  }
}

// ---- talking to the API -----------------------------------------------------------------------

async function apiError(response) {
  try {
    const body = await response.json();
    if (body.error && body.error.message) return `${response.status}: ${body.error.message}`;
  } catch (e) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

async function loadModel() {
  const status = $("model-status");
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (response.status === 401) {
      status.textContent = "enter the API key";
      return;
    }
    if (!response.ok) {
      status.textContent = await apiError(response);
      if (response.status === 503) setTimeout(loadModel, 1000);
      return;
    }
    const card = (await response.json()).data[0];
    state.model = card.id;
    state.contextLength = card.max_model_len || state.contextLength;
    const slider = $("max-tokens");
    slider.max = String(state.contextLength);
    if (Number(slider.value) > state.contextLength) slider.value = String(Math.min(100, state.contextLength));
    slider.dispatchEvent(new Event("input"));
    status.textContent = `model ${card.id} · context ${state.contextLength} tokens`;
  } catch (e) {
    status.textContent = "server unreachable";
  }
}

// Yields the parsed JSON of each `data:` event of a server-sent-events response, until [DONE].
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

// ---- tokens -------------------------------------------------------------------------------------

// A completions token string is its text, or "bytes:\xe2\x80" for part of a character.
function tokenBytes(token) {
  if (token.startsWith("bytes:")) {
    const hex = token.slice(6).match(/\\x([0-9a-f]{2})/gi) || [];
    return Uint8Array.from(hex.map((h) => parseInt(h.slice(2), 16)));
  }
  return new TextEncoder().encode(token);
}

// How a token is named in the tooltip: whitespace made visible, escapes for control characters.
function displayToken(token) {
  if (token.startsWith("bytes:")) return token;
  return JSON.stringify(token).slice(1, -1).replace(/ /g, "\u2423");
}

const tokenDecoder = { decoder: new TextDecoder(), reset() { this.decoder = new TextDecoder(); } };

function addToken(name, bytes, logprob, top) {
  const text = tokenDecoder.decoder.decode(bytes, { stream: true });
  state.tokens.push({ name, text, logprob, top });
}

function addCompletionLogprobs(lp) {
  if (!lp) return;
  lp.tokens.forEach((token, i) => {
    const top = Object.entries(lp.top_logprobs[i] || {})
      .map(([t, logprob]) => ({ token: t, logprob }))
      .sort((a, b) => b.logprob - a.logprob);
    addToken(token, tokenBytes(token), lp.token_logprobs[i], top);
  });
}

function addChatLogprobs(lp) {
  if (!lp || !lp.content) return;
  for (const t of lp.content) {
    const bytes = t.bytes ? Uint8Array.from(t.bytes) : tokenBytes(t.token);
    addToken(t.token, bytes, t.logprob, t.top_logprobs || []);
  }
}

function probabilityColour(logprob) {
  const p = Math.exp(logprob);
  const hue = Math.round(120 * Math.sqrt(p)); // sqrt spreads the many small probabilities
  return `hsl(${hue}, 75%, 82%)`;
}

// ---- rendering ----------------------------------------------------------------------------------

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  const out = $("output");
  const frag = document.createDocumentFragment();
  if (state.prefix) {
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = state.prefix;
    frag.append(prompt);
  }
  let shown = 0;
  state.tokens.forEach((token, i) => {
    if (shown >= state.text.length || !token.text) return;
    const piece = token.text.slice(0, state.text.length - shown);
    const span = document.createElement("span");
    span.className = "tok";
    span.dataset.index = String(i);
    span.textContent = piece;
    if (token.logprob !== null && token.logprob !== undefined) {
      span.style.backgroundColor = probabilityColour(token.logprob);
    }
    frag.append(span);
    shown += piece.length;
  });
  if (shown < state.text.length) frag.append(state.text.slice(shown)); // text without logprobs
  out.replaceChildren(frag);
}

function renderTranscript() {
  const box = $("transcript");
  box.replaceChildren(...state.conversation.map((m) => {
    const div = document.createElement("div");
    div.className = "turn " + m.role;
    div.textContent = m.content;
    return div;
  }));
  box.hidden = mode() !== "chat" || state.conversation.length === 0;
}

function showTooltip(span, event) {
  const token = state.tokens[Number(span.dataset.index)];
  if (token) showAlternatives(event, token.name, token.logprob, token.top);
}

// The tooltip: a token, its probability, and its alternatives ({token, logprob}) as bars.
function showAlternatives(event, name, logprob, top, note) {
  const tip = $("tooltip");
  const pct = (lp) => (100 * Math.exp(lp)).toFixed(lp > -4.6 ? 1 : 3) + "%";
  const rows = top.map((alt) => {
    const row = document.createElement("tr");
    const cell = document.createElement("td");
    cell.textContent = displayToken(alt.token);
    const bar = document.createElement("td");
    const fill = document.createElement("span");
    fill.className = "bar";
    fill.style.width = (100 * Math.exp(alt.logprob)).toFixed(1) + "%";
    bar.append(fill);
    const value = document.createElement("td");
    value.textContent = pct(alt.logprob);
    row.append(cell, bar, value);
    if (alt.token === name) row.className = "chosen-row";
    return row;
  });
  const head = document.createElement("div");
  head.className = "chosen";
  head.textContent = `"${displayToken(name)}"  p = ${logprob == null ? "?" : pct(logprob)}` + (note ? "  " + note : "");
  const table = document.createElement("table");
  table.append(...rows);
  tip.replaceChildren(head, table);
  tip.hidden = false;
  placeTooltip(event);
}

function placeTooltip(event) {
  const tip = $("tooltip");
  const x = Math.min(event.clientX + 12, window.innerWidth - tip.offsetWidth - 8);
  tip.style.left = x + "px";
  tip.style.top = event.clientY + 16 + "px";
}

// ---- generating ---------------------------------------------------------------------------------

function resetAnswer(prefix) {
  state.tokens = [];
  state.text = "";
  state.prefix = prefix;
  state.chunks = 0;
  tokenDecoder.reset();
  render();
}

function setBusy(busy) {
  $("generate").disabled = busy;
  $("stop-button").disabled = !busy;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// Chat: the user's turn joins the conversation only once an answer comes back. After an error
// (or a stop before any text), the turn is taken back and its text returns to the input box, so
// the next Send does not send it twice.
async function generate() {
  showError("");
  if ($("generate").disabled) return; // Ctrl+Enter while a request runs
  setBusy(true);
  if (!state.model) await loadModel();
  const chat = mode() === "chat";
  const prompt = $("prompt").value;
  let url, body, turn = null;
  if (chat) {
    if (!prompt.trim()) {
      setBusy(false);
      return;
    }
    turn = { role: "user", content: prompt };
    state.conversation.push(turn);
    const messages = [];
    if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value });
    messages.push(...state.conversation);
    url = "/v1/chat/completions";
    body = { ...samplingFields(), messages, logprobs: true, top_logprobs: 5 };
    $("prompt").value = "";
    renderTranscript();
    resetAnswer("");
    body.max_tokens = await maxTokensFor({ messages });
  } else {
    url = "/v1/completions";
    body = { ...samplingFields(), prompt, logprobs: 5 };
    resetAnswer(prompt);
    body.max_tokens = await maxTokensFor({ prompt });
  }
  if (body.max_tokens === undefined) delete body.max_tokens;
  state.lastRequest = body; // (tests read it)
  state.abort = new AbortController();
  const started = performance.now();
  let usage = null;
  let finish = null;
  try {
    const response = await fetch(url, { method: "POST", headers: headers(), body: JSON.stringify(body),
                                        signal: state.abort.signal });
    if (!response.ok) throw new Error(await apiError(response));
    for await (const event of sseEvents(response)) {
      if (event.error) throw new Error(event.error.message);
      state.chunks += 1;
      if (event.usage) usage = event.usage;
      for (const choice of event.choices || []) {
        if (chat) {
          state.text += (choice.delta && choice.delta.content) || "";
          addChatLogprobs(choice.logprobs);
        } else {
          state.text += choice.text || "";
          addCompletionLogprobs(choice.logprobs);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      scheduleRender();
    }
  } catch (e) {
    if (e.name !== "AbortError") showError(e.message);
    finish = finish || (e.name === "AbortError" ? "stopped" : "error");
  } finally {
    setBusy(false);
    state.abort = null;
    render();
  }
  const seconds = (performance.now() - started) / 1000;
  const n = usage ? usage.completion_tokens : state.tokens.length;
  const capped = state.capped ? ` · max tokens ${state.capped}: what the prompt leaves of the context` : "";
  $("stats").textContent = `${n} tokens in ${seconds.toFixed(2)} s (${(n / seconds).toFixed(1)}/s) · ${finish || ""}${capped}`;
  if (chat && state.text) {
    state.conversation.push({ role: "assistant", content: state.text });
  } else if (chat && (finish === "error" || finish === "stopped")) {
    state.conversation.splice(state.conversation.indexOf(turn), 1);
    if (!$("prompt").value) $("prompt").value = prompt; // unless something new was typed meanwhile
  }
  if (chat) renderTranscript();
}

// ---- inspect: attention and probabilities of the current text (POST /v1/inspect) ---------------

const insp = {
  text: "", // the text inspected
  tokens: [], // its tokens (strings, as completions logprobs show them)
  ids: [],
  nLayer: 0,
  nHead: 0,
  maps: {}, // "layer:head" (head a number or "mean") → T×T attention weights
  probabilities: null, // the response's probabilities view
  query: null, // the token whose attention is shown
  pinned: false,
  run: 0, // bumped by each inspect, so a late answer for an older text is dropped
  requests: 0, // /v1/inspect calls made (tests read it)
  view: "attention",
};
state.inspect = insp;

// The text the panel looks at: the prompt and the answer in the output box, else the prompt box.
function currentText() {
  if (mode() === "chat") return state.text || $("prompt").value;
  if (state.prefix || state.text) return state.prefix + state.text;
  return $("prompt").value;
}

async function inspectCall(fields) {
  insp.requests += 1;
  const body = { model: state.model || undefined, text: insp.text, ...fields };
  const response = await fetch("/v1/inspect", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw new Error(await apiError(response));
  return response.json();
}

function selectedLayer() {
  return Number($("attention-layer").value || 0);
}

function selectedHead() {
  const v = $("attention-head").value;
  return v === "mean" || v === "" ? "mean" : Number(v);
}

function mapKey(layer, head) {
  return `${layer}:${head}`;
}

function fillSelect(select, options, keep) {
  select.replaceChildren(...options.map(([value, label]) => {
    const option = document.createElement("option");
    option.value = String(value);
    option.textContent = label;
    return option;
  }));
  select.value = options.some(([value]) => String(value) === String(keep)) ? String(keep) : String(options[0][0]);
}

function setInspectStatus(text) {
  $("inspect-status").textContent = text;
}

async function runInspect() {
  showError("");
  if (!state.model) await loadModel();
  const text = currentText();
  if (!text) {
    showError("nothing to inspect: type a prompt or generate some text first");
    return;
  }
  $("inspect-panel").hidden = false;
  const run = ++insp.run;
  insp.text = text;
  setInspectStatus("inspecting…");
  const layer = selectedLayer();
  const head = selectedHead();
  try {
    const data = await inspectCall({ views: ["attention", "probabilities"], top_k: 5, layer, head });
    if (run !== insp.run) return;
    const att = data.attention;
    insp.tokens = data.tokens;
    insp.ids = data.token_ids;
    insp.nLayer = att.n_layer;
    insp.nHead = att.n_head;
    insp.maps = { [mapKey(att.layers[0], att.head_mean ? "mean" : att.heads[0])]: att.weights[0][0] };
    insp.probabilities = data.probabilities;
    insp.query = null;
    insp.pinned = false;
    fillSelect($("attention-layer"), [...Array(att.n_layer).keys()].map((l) => [l, String(l)]), att.layers[0]);
    fillSelect($("attention-head"), [["mean", "mean over heads"], ...[...Array(att.n_head).keys()].map((h) => [h, String(h)])],
               att.head_mean ? "mean" : att.heads[0]);
    renderAttention();
    renderProbabilities();
    setInspectStatus(`${data.tokens.length} tokens · ${att.n_layer} layers × ${att.n_head} heads`);
  } catch (e) {
    if (run === insp.run) setInspectStatus("");
    showError(e.message);
  }
}

// After a layer or head change: the map from the cache, or one more call for just that map.
async function changeAttention() {
  const layer = selectedLayer();
  const head = selectedHead();
  const key = mapKey(layer, head);
  if (!insp.maps[key]) {
    const run = insp.run;
    setInspectStatus("loading layer " + layer + "…");
    try {
      const data = await inspectCall({ views: ["attention"], layer, head });
      if (run !== insp.run) return;
      insp.maps[key] = data.attention.weights[0][0];
      setInspectStatus(`${insp.tokens.length} tokens · ${insp.nLayer} layers × ${insp.nHead} heads`);
    } catch (e) {
      showError(e.message);
      return;
    }
  }
  renderAttention();
}

function currentMap() {
  return insp.maps[mapKey(selectedLayer(), selectedHead())] || null;
}

function attentionShade(weight) {
  const alpha = Math.sqrt(Math.max(0, weight)); // sqrt, as for probabilities: small weights stay visible
  return `rgba(47, 111, 223, ${(0.9 * alpha).toFixed(3)})`;
}

// Whitespace as visible marks (a space ·, a newline ↵, a tab →, a carriage return ␍), each in a
// span.ws so that it reads as a mark, not as text: a token of spaces is no longer an empty box.
const WHITESPACE_MARKS = { " ": "\u00b7", "\n": "\u21b5", "\t": "\u2192", "\r": "\u240d" };

function chipContent(chip, token) {
  let plain = "";
  const flush = () => { if (plain) chip.append(plain); plain = ""; };
  for (const ch of token) {
    const mark = WHITESPACE_MARKS[ch];
    if (!mark) { plain += ch; continue; }
    flush();
    const span = document.createElement("span");
    span.className = "ws";
    span.textContent = mark;
    chip.append(span);
  }
  flush();
}

// A chip for each token; a newline token also breaks the line, so the layout follows the text.
function tokenChips(box, className) {
  const frag = document.createDocumentFragment();
  insp.tokens.forEach((token, i) => {
    const chip = document.createElement("span");
    chip.className = "chip " + className;
    chip.dataset.index = String(i);
    const newline = token.endsWith("\n");
    chipContent(chip, token);
    if (newline) chip.classList.add("newline");
    frag.append(chip);
    if (newline) {
      const br = document.createElement("span");
      br.className = "break";
      frag.append(br);
    }
  });
  box.replaceChildren(frag);
}

function renderAttention() {
  tokenChips($("attention-tokens"), "att");
  drawHeatmap();
  shadeAttention();
}

// Shade every chip by how much the query token attends to it (nothing shaded without a query).
function shadeAttention() {
  const map = currentMap();
  const q = insp.query;
  $("attention-tokens").querySelectorAll(".chip").forEach((chip) => {
    const j = Number(chip.dataset.index);
    chip.classList.toggle("query", j === q);
    chip.classList.toggle("pinned", j === q && insp.pinned);
    chip.classList.toggle("future", q !== null && j > q);
    if (q === null || !map) {
      chip.style.backgroundColor = "";
      chip.removeAttribute("data-weight");
      chip.title = "";
      return;
    }
    const w = j <= q ? map[q][j] : 0;
    chip.dataset.weight = String(w);
    chip.style.backgroundColor = j <= q ? attentionShade(w) : "";
    chip.title = j <= q ? `${displayToken(insp.tokens[q])} → ${displayToken(insp.tokens[j])}: ${(100 * w).toFixed(1)}%` : "";
  });
  markHeatmapRow();
}

function setQuery(i, pin) {
  if (pin !== undefined) insp.pinned = pin;
  insp.query = i;
  shadeAttention();
}

function heatmapCell() {
  const n = insp.tokens.length;
  return Math.max(1, Math.min(14, Math.floor(420 / Math.max(1, n))));
}

function drawHeatmap() {
  const canvas = $("attention-map");
  const map = currentMap();
  const n = insp.tokens.length;
  const cell = heatmapCell();
  canvas.width = canvas.height = n * cell;
  if (!map || n === 0) return;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, n * cell, n * cell);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      ctx.fillStyle = attentionShade(map[i][j]);
      ctx.fillRect(j * cell, i * cell, cell, cell);
    }
  }
}

// The query's row of the heat map, outlined (a box over the canvas: no redraw of T² cells).
function markHeatmapRow() {
  const mark = $("attention-row");
  mark.hidden = insp.query === null || !currentMap();
  if (mark.hidden) return;
  const cell = heatmapCell();
  mark.style.top = insp.query * cell - 1 + "px"; // 1px canvas border, 2px mark border
  mark.style.height = cell + 4 + "px";
}

function heatmapPoint(event) {
  const canvas = $("attention-map");
  const rect = canvas.getBoundingClientRect();
  const cell = heatmapCell();
  const i = Math.floor((event.clientY - rect.top - canvas.clientTop) / cell);
  const j = Math.floor((event.clientX - rect.left - canvas.clientLeft) / cell);
  const n = insp.tokens.length;
  return i >= 0 && i < n && j >= 0 && j < n ? { i, j } : null;
}

function renderProbabilities() {
  const view = insp.probabilities;
  const box = $("probability-tokens");
  if (!view) {
    box.replaceChildren();
    return;
  }
  tokenChips(box, "prob");
  box.querySelectorAll(".chip").forEach((chip) => {
    const i = Number(chip.dataset.index);
    if (i === 0) {
      chip.classList.add("first");
      chip.title = "the first token has no context: not scored";
      return;
    }
    const at = view.positions[i - 1];
    chip.dataset.prob = String(at.prob);
    chip.style.backgroundColor = probabilityColour(at.logprob);
  });
  const summary = view.mean_surprisal_bits == null ? "one token: nothing to score"
    : `mean surprisal ${view.mean_surprisal_bits.toFixed(2)} bits/token · perplexity ${view.perplexity.toFixed(2)}`;
  $("probability-summary").textContent = summary + " · hover a token for the alternatives";
  const list = $("next-token");
  list.replaceChildren(...view.next_token.map((alt) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = displayToken(alt.token);
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * alt.prob).toFixed(1) + "%";
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = (100 * alt.prob).toFixed(alt.prob >= 0.01 ? 1 : 3) + "%";
    li.append(name, track, value);
    return li;
  }));
}

function showInspectTab(view) {
  insp.view = view;
  $("tab-attention").setAttribute("aria-selected", String(view === "attention"));
  $("tab-probabilities").setAttribute("aria-selected", String(view === "probabilities"));
  $("attention-view").hidden = view !== "attention";
  $("probability-view").hidden = view !== "probabilities";
}

function wireInspect() {
  $("inspect-button").addEventListener("click", runInspect);
  $("inspect-close").addEventListener("click", () => { $("inspect-panel").hidden = true; });
  $("tab-attention").addEventListener("click", () => showInspectTab("attention"));
  $("tab-probabilities").addEventListener("click", () => showInspectTab("probabilities"));
  $("attention-layer").addEventListener("change", changeAttention);
  $("attention-head").addEventListener("change", changeAttention);
  const chips = $("attention-tokens");
  chips.addEventListener("mouseover", (e) => {
    const chip = e.target.closest(".chip");
    if (chip && !insp.pinned) setQuery(Number(chip.dataset.index));
  });
  chips.addEventListener("mouseleave", () => { if (!insp.pinned) setQuery(null); });
  chips.addEventListener("click", (e) => {
    const chip = e.target.closest(".chip");
    if (!chip) return;
    const i = Number(chip.dataset.index);
    if (insp.pinned && insp.query === i) setQuery(null, false); // a second click unpins
    else setQuery(i, true);
  });
  const canvas = $("attention-map");
  canvas.addEventListener("mousemove", (e) => {
    const at = heatmapPoint(e);
    if (!at) return;
    const map = currentMap();
    const w = at.j <= at.i && map ? map[at.i][at.j] : 0;
    canvas.title = `${displayToken(insp.tokens[at.i])} → ${displayToken(insp.tokens[at.j])}: ${(100 * w).toFixed(1)}%`;
  });
  canvas.addEventListener("click", (e) => {
    const at = heatmapPoint(e);
    if (at) setQuery(at.i, true);
  });
  const probs = $("probability-tokens");
  probs.addEventListener("mouseover", (e) => {
    const chip = e.target.closest(".chip");
    const view = insp.probabilities;
    if (!chip || !view) return;
    const i = Number(chip.dataset.index);
    if (i === 0) return;
    const at = view.positions[i - 1];
    const top = at.top.map((alt) => ({ token: alt.token, logprob: Math.log(alt.prob) }));
    showAlternatives(e, at.token, at.logprob, top, `${at.surprisal_bits.toFixed(2)} bits`);
  });
  probs.addEventListener("mouseout", (e) => {
    if (e.target.closest(".chip")) $("tooltip").hidden = true;
  });
}

// ---- wiring -------------------------------------------------------------------------------------

function init() {
  bindSlider("temperature", (v) => v.toFixed(2));
  bindSlider("top-p", (v) => v.toFixed(2));
  bindSlider("top-k", (v) => (v === 0 ? "off" : String(v)));
  bindSlider("max-tokens", (v) => (v === 0 ? "auto" : String(v)));
  const savedKey = sessionStorage.getItem("gptlab-api-key");
  if (savedKey) $("api-key").value = savedKey;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("gptlab-api-key", apiKey());
    loadModel();
  });
  document.querySelectorAll('input[name="mode"]').forEach((radio) => radio.addEventListener("change", () => {
    const chat = mode() === "chat";
    $("system-label").hidden = !chat;
    $("prompt").placeholder = chat ? "Your message (Ctrl+Enter sends)" : "Type a prompt, then press Generate";
    $("generate").textContent = chat ? "Send" : "Generate";
    resetAnswer("");
    renderTranscript();
  }));
  $("generate").addEventListener("click", generate);
  $("stop-button").addEventListener("click", () => state.abort && state.abort.abort());
  $("clear").addEventListener("click", () => {
    state.conversation = [];
    resetAnswer("");
    renderTranscript();
    $("stats").textContent = "";
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) generate();
  });
  const out = $("output");
  out.addEventListener("mouseover", (e) => {
    const span = e.target.closest(".tok");
    if (span) showTooltip(span, e);
  });
  out.addEventListener("mouseout", (e) => {
    if (e.target.closest(".tok")) $("tooltip").hidden = true;
  });
  wireInspect();
  loadModel();
}

init();
