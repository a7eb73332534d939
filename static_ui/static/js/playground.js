// The Playground: chat with any model (streamed, reasoning shown apart, Stop aborts the
// request), and embeddings, rerank, images, speech and transcription for the models whose
// `capabilities` (in /v1/models) say they do them. Replies are shown as text, never markup.

import { api, el, errorMessage, responseError, stored, toast, url } from "./base.js";
import { count, milliseconds, speed } from "./format.js";

const $ = (id) => document.getElementById(id);

// One session id per page load, so the activity table can group this page's requests.
const SESSION = `playground-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
// The longest SSE event a reply may send before the stream is refused.
const EVENT_CHARS = 8 << 20;

// ---- models and tabs

let models = [];
const select = $("pg-model");
const tablist = document.querySelector('[data-tabs="playground"]');
let tab = "chat";

function capableOf(name) {
  const capability = tablist.querySelector(`[data-tab="${name}"]`)?.dataset.capability;
  return capability ? models.filter((m) => m.capabilities?.[capability]) : models;
}

function fillModels() {
  const choices = capableOf(tab);
  const wanted = new URLSearchParams(location.search).get("model");
  const previous = stored.get(`playground.model.${tab}`, "");
  select.replaceChildren(...choices.map((m) => el("option", { value: m.id }, m.name && m.name !== m.id ? `${m.id} — ${m.name}` : m.id)));
  if (choices.length === 0) select.append(el("option", { value: "" }, "no model offers this"));
  for (const candidate of [wanted, previous]) {
    if (candidate && choices.some((m) => m.id === candidate)) {
      select.value = candidate;
      break;
    }
  }
  select.disabled = choices.length === 0;
}

select.addEventListener("change", () => stored.set(`playground.model.${tab}`, select.value));

tablist.addEventListener("tabchange", (event) => {
  tab = event.detail.dataset.tab;
  stored.set("playground.tab", tab);
  fillModels();
});

async function loadModels() {
  try {
    const listed = await api("/v1/models");
    models = (listed?.data ?? []).filter((m) => m && typeof m.id === "string" && m.meta?.trioswap?.type !== "alias");
    $("pg-models-status").textContent = models.length ? "" : "no models listed";
  } catch (error) {
    models = [];
    $("pg-models-status").textContent = `Models unavailable: ${error.message}`;
  }
  for (const button of tablist.querySelectorAll("[data-capability]")) {
    button.hidden = !models.some((m) => m.capabilities?.[button.dataset.capability]);
  }
  const saved = tablist.querySelector(`[data-tab="${stored.get("playground.tab", "chat")}"]`);
  if (saved && !saved.hidden) tablist.selectTab(saved);
  else fillModels();
}

function chosenModel() {
  if (!select.value) {
    toast("Choose a model first", "error");
    return null;
  }
  return select.value;
}

// ---- chat

const history = []; // what the model has been told and answered, in OpenAI's shape
const messagesBox = $("chat-messages");
const input = $("chat-input");
const sendButton = $("chat-send");
const stopButton = $("chat-stop");
let running = null; // the AbortController of the reply under way

function scrollDown() {
  messagesBox.scrollTop = messagesBox.scrollHeight;
}

function userMessage(text) {
  messagesBox.append(el("div", { class: "message user", "data-testid": "chat-message", "data-role": "user" }, el("div", { class: "role" }, "you"), el("div", { class: "content" }, text)));
  scrollDown();
}

/** The assistant's reply as it arrives; updates are drawn at most once a frame. */
function assistantMessage(model) {
  const reasoningText = el("div", { "data-testid": "chat-reasoning" });
  const reasoning = el("details", { class: "reasoning", open: true, hidden: true }, el("summary", {}, "Reasoning"), reasoningText);
  const content = el("div", { class: "content", "data-testid": "chat-content" });
  const meta = el("div", { class: "meta", "data-testid": "chat-meta" });
  const root = el("div", { class: "message assistant", "data-testid": "chat-message", "data-role": "assistant", "data-state": "streaming" }, el("div", { class: "role" }, model), reasoning, content, meta);
  messagesBox.append(root);
  scrollDown();
  let pending = null;
  let frame = 0;
  const draw = () => {
    frame = 0;
    const follow = messagesBox.scrollTop + messagesBox.clientHeight >= messagesBox.scrollHeight - 24;
    if (pending.reasoning) {
      reasoning.hidden = false;
      reasoningText.textContent = pending.reasoning;
    }
    content.textContent = pending.content;
    if (follow) scrollDown();
  };
  return {
    update(text, thought) {
      pending = { content: text, reasoning: thought };
      if (!frame) frame = requestAnimationFrame(draw);
    },
    finish(state, note) {
      if (frame) {
        cancelAnimationFrame(frame);
        draw();
      }
      root.dataset.state = state;
      if (state === "error") root.classList.add("error");
      meta.textContent = note;
    },
  };
}

/** The `data:` payloads of a server-sent event stream, as strings. */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(line[5] === " " ? 6 : 5));
      if (data.length) yield data.join("\n");
    }
    if (buffer.length > EVENT_CHARS) throw new Error("the reply sent an event too large to show");
  }
}

function chatBody(model) {
  const messages = [];
  const system = $("chat-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = { model, messages, stream: true, stream_options: { include_usage: true } };
  const temperature = $("chat-temperature").value;
  const maxTokens = $("chat-max-tokens").value;
  if (temperature !== "") body.temperature = Number(temperature);
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  return body;
}

function setBusy(busy) {
  sendButton.disabled = busy;
  stopButton.disabled = !busy;
}

async function send() {
  const text = input.value.trim();
  if (!text || running) return;
  const model = chosenModel();
  if (!model) return;
  input.value = "";
  history.push({ role: "user", content: text });
  userMessage(text);
  const reply = assistantMessage(model);
  const controller = new AbortController();
  running = controller;
  setBusy(true);
  let content = "";
  let reasoning = "";
  let usage = null;
  let pieces = 0;
  const started = performance.now();
  let firstAt = null;
  let lastAt = null;
  const stats = () => {
    const generated = usage?.completion_tokens ?? pieces;
    const parts = [`${count(generated)} tokens`];
    if (firstAt !== null) parts.push(`first token ${milliseconds(firstAt - started)}`);
    if (firstAt !== null && lastAt > firstAt && generated > 1) parts.push(speed(((generated - 1) * 1000) / (lastAt - firstAt)));
    return parts.join(" · ");
  };
  try {
    const response = await fetch(url("/v1/chat/completions"), {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Session-ID": SESSION },
      body: JSON.stringify(chatBody(model)),
      signal: controller.signal,
    });
    if (!response.ok) throw await responseError(response);
    if (!(response.headers.get("content-type") || "").includes("text/event-stream")) {
      const answer = await response.json();
      const message = answer?.choices?.[0]?.message ?? {};
      content = message.content ?? "";
      reasoning = message.reasoning_content ?? message.reasoning ?? "";
      usage = answer?.usage ?? null;
      firstAt = lastAt = performance.now();
      reply.update(content, reasoning);
    } else {
      for await (const data of sseData(response.body)) {
        if (data === "[DONE]") break;
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch {
          continue;
        }
        if (chunk?.error) throw new Error(errorMessage(chunk, "the model's reply failed"));
        if (chunk?.usage) usage = chunk.usage;
        const delta = chunk?.choices?.[0]?.delta;
        if (!delta) continue;
        const thought = delta.reasoning_content ?? delta.reasoning ?? "";
        const said = delta.content ?? "";
        if (thought || said) {
          lastAt = performance.now();
          firstAt ??= lastAt;
          pieces += 1;
        }
        reasoning += thought;
        content += said;
        reply.update(content, reasoning);
      }
    }
    history.push({ role: "assistant", content });
    reply.finish("done", stats());
  } catch (error) {
    if (error.name === "AbortError") {
      if (content) history.push({ role: "assistant", content });
      reply.finish("stopped", `stopped · ${stats()}`);
    } else {
      history.pop(); // the question was not answered: it may be asked again
      reply.finish("error", error.message);
    }
  } finally {
    running = null;
    setBusy(false);
    input.focus();
  }
}

$("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
stopButton.addEventListener("click", () => running?.abort());
$("chat-clear").addEventListener("click", () => {
  running?.abort();
  history.length = 0;
  messagesBox.replaceChildren();
});

// ---- the other tabs: one request each, the answer shown below

async function post(path, body) {
  const init = { method: "POST", headers: { "X-Session-ID": SESSION } };
  if (body instanceof FormData) init.body = body;
  else {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url(path), init);
  if (!response.ok) throw await responseError(response);
  return response;
}

const lines = (id) => $(id).value.split("\n").map((l) => l.trim()).filter(Boolean);

function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na && nb ? dot / Math.sqrt(na * nb) : NaN;
}

const clip = (text, n = 60) => (text.length > n ? `${text.slice(0, n)}…` : text);

const runners = {
  async embeddings(model, output) {
    const inputs = lines("emb-input");
    if (!inputs.length) throw new Error("Write at least one line to embed");
    const answer = await (await post("/v1/embeddings", { model, input: inputs })).json();
    const vectors = (answer?.data ?? []).map((d) => (Array.isArray(d.embedding) ? d.embedding : []));
    const table = el(
      "table",
      { class: "table small" },
      el("thead", {}, el("tr", {}, el("th", {}, "input"), el("th", { class: "num" }, "dimensions"), el("th", {}, "first values"))),
      el("tbody", {}, vectors.map((v, i) => el("tr", {}, el("td", {}, clip(inputs[i] ?? "")), el("td", { class: "num" }, String(v.length)), el("td", { class: "mono" }, v.slice(0, 6).map((x) => Number(x).toFixed(4)).join(", "))))),
    );
    const parts = [el("div", { class: "table-wrap" }, table)];
    if (vectors.length > 1 && vectors.length <= 20) {
      parts.push(
        el("h3", {}, "Cosine similarity"),
        el(
          "div",
          { class: "table-wrap" },
          el("table", { class: "table small" }, el("tbody", {}, vectors.map((a, i) => el("tr", {}, el("th", {}, clip(inputs[i] ?? "", 24)), vectors.map((b) => el("td", { class: "num" }, cosine(a, b).toFixed(3))))))),
        ),
      );
    }
    output.replaceChildren(...parts);
  },

  async rerank(model, output) {
    const query = $("rerank-query").value.trim();
    const documents = lines("rerank-docs");
    if (!query || !documents.length) throw new Error("Write a query and at least one document");
    const answer = await (await post("/v1/rerank", { model, query, documents })).json();
    const results = [...(answer?.results ?? [])].sort((a, b) => (b.relevance_score ?? 0) - (a.relevance_score ?? 0));
    output.replaceChildren(
      el(
        "table",
        { class: "table small" },
        el("thead", {}, el("tr", {}, el("th", { class: "num" }, "score"), el("th", {}, "document"))),
        el("tbody", {}, results.map((r) => el("tr", {}, el("td", { class: "num" }, Number(r.relevance_score).toFixed(4)), el("td", {}, documents[r.index] ?? r.document?.text ?? String(r.index))))),
      ),
    );
  },

  async images(model, output) {
    const prompt = $("img-prompt").value.trim();
    if (!prompt) throw new Error("Write a prompt");
    const n = Math.max(1, Math.min(4, Number($("img-n").value) || 1));
    const answer = await (await post("/v1/images/generations", { model, prompt, n, size: $("img-size").value, response_format: "b64_json" })).json();
    const shown = [];
    for (const image of answer?.data ?? []) {
      if (typeof image.b64_json === "string" && /^[A-Za-z0-9+/=\s]+$/.test(image.b64_json)) {
        shown.push(el("img", { src: `data:image/png;base64,${image.b64_json.replace(/\s/g, "")}`, alt: prompt }));
      } else if (typeof image.url === "string") {
        // Only images carried in the answer are shown; an address elsewhere is given as text.
        shown.push(el("p", { class: "mono small" }, `image at ${image.url}`));
      }
    }
    output.replaceChildren(...(shown.length ? shown : [el("p", { class: "muted" }, "The answer held no image.")]));
  },

  async speech(model, output) {
    const text = $("speech-input").value.trim();
    if (!text) throw new Error("Write something to say");
    const blob = await (await post("/v1/audio/speech", { model, input: text, voice: $("speech-voice").value.trim() || "alloy" })).blob();
    const old = output.querySelector("audio");
    if (old) URL.revokeObjectURL(old.src);
    output.replaceChildren(el("audio", { controls: true, src: URL.createObjectURL(blob), "data-testid": "speech-audio" }));
  },

  async transcription(model, output) {
    const file = $("stt-file").files?.[0];
    if (!file) throw new Error("Choose an audio file");
    const form = new FormData();
    form.append("model", model);
    form.append("file", file);
    const response = await post("/v1/audio/transcriptions", form);
    const text = await response.text();
    let said = text;
    try {
      said = JSON.parse(text).text ?? text;
    } catch {
      // a plain-text answer (response_format=text)
    }
    output.replaceChildren(el("p", { "data-testid": "stt-text" }, said));
  },
};

document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-run]");
  if (!button) return;
  const model = chosenModel();
  if (!model) return;
  const output = button.closest('[role="tabpanel"]').querySelector(".output");
  button.disabled = true;
  output.replaceChildren(el("p", { class: "muted" }, "working…"));
  try {
    await runners[button.dataset.run](model, output);
  } catch (error) {
    output.replaceChildren(el("p", { class: "error-text", "data-testid": "pg-error" }, error.message));
  } finally {
    button.disabled = false;
  }
});

loadModels();
