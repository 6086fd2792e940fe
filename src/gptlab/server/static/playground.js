// gptlab playground: calls the server's own OpenAI-compatible API (/v1), streams the answer over
// server-sent events (fetch + ReadableStream), and colours each generated token by its probability,
// with the most likely alternatives on hover (from the API's logprobs). No build step, no CDN.
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
    max_tokens: Number($("max-tokens").value),
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
  if (!token) return;
  const tip = $("tooltip");
  const pct = (lp) => (100 * Math.exp(lp)).toFixed(lp > -4.6 ? 1 : 3) + "%";
  const rows = token.top.map((alt) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = displayToken(alt.token);
    const bar = document.createElement("td");
    const fill = document.createElement("span");
    fill.className = "bar";
    fill.style.width = (100 * Math.exp(alt.logprob)).toFixed(1) + "%";
    bar.append(fill);
    const value = document.createElement("td");
    value.textContent = pct(alt.logprob);
    row.append(name, bar, value);
    if (alt.token === token.name) row.className = "chosen-row";
    return row;
  });
  const head = document.createElement("div");
  head.className = "chosen";
  head.textContent = `"${displayToken(token.name)}"  p = ${token.logprob == null ? "?" : pct(token.logprob)}`;
  const table = document.createElement("table");
  table.append(...rows);
  tip.replaceChildren(head, table);
  tip.hidden = false;
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

async function generate() {
  showError("");
  if (!state.model) await loadModel();
  const chat = mode() === "chat";
  const prompt = $("prompt").value;
  let url, body;
  if (chat) {
    if (!prompt.trim()) return;
    state.conversation.push({ role: "user", content: prompt });
    const messages = [];
    if ($("system").value.trim()) messages.push({ role: "system", content: $("system").value });
    messages.push(...state.conversation);
    url = "/v1/chat/completions";
    body = { ...samplingFields(), messages, logprobs: true, top_logprobs: 5 };
    $("prompt").value = "";
    renderTranscript();
    resetAnswer("");
  } else {
    url = "/v1/completions";
    body = { ...samplingFields(), prompt, logprobs: 5 };
    resetAnswer(prompt);
  }
  state.abort = new AbortController();
  setBusy(true);
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
  $("stats").textContent = `${n} tokens in ${seconds.toFixed(2)} s (${(n / seconds).toFixed(1)}/s) · ${finish || ""}`;
  if (chat && state.text) {
    state.conversation.push({ role: "assistant", content: state.text });
    renderTranscript();
  }
}

// ---- wiring -------------------------------------------------------------------------------------

function init() {
  bindSlider("temperature", (v) => v.toFixed(2));
  bindSlider("top-p", (v) => v.toFixed(2));
  bindSlider("top-k", (v) => (v === 0 ? "off" : String(v)));
  bindSlider("max-tokens", (v) => String(v));
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
  loadModel();
}

init();
