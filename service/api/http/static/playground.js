// The rnnserve playground: streams a generation over SSE, colours each character by a unit's activation
// (Trace over HTTP), draws a classifier's probabilities, streams a translation and draws its alignment.
// Plain DOM, no build step, no requests off this server.
"use strict";

const $ = (id) => document.getElementById(id);
const QUANTITIES = {
  lstm: ["cell", "hidden", "input_gate", "forget_gate", "output_gate"],
  gru: ["hidden", "update_gate", "reset_gate"],
  rnn: ["hidden"],
};
const NEGATIVE = [33, 102, 172], POSITIVE = [178, 24, 43];  // blue low, white middle, red high (as the trace pages)

let models = {}, presets = {}, running = null;
const trace = { busy: false, again: false, stopped: false };

function headers() {
  const h = { "content-type": "application/json" };
  const token = sessionStorage.getItem("rnnserve-token");
  if (token) h.authorization = "Bearer " + token;
  return h;
}

async function api(path, body, signal) {
  const init = body === undefined ? { headers: headers(), signal } :
    { method: "POST", headers: headers(), body: JSON.stringify(body), signal };
  const response = await fetch(path, init);
  if (response.ok) return response;
  let message = response.status + " " + response.statusText;
  try { message = (await response.json()).error.message || message; } catch (_) { /* not JSON */ }
  if (response.status === 401) $("token-box").hidden = false;
  throw new Error(message);
}

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

// ---- models
async function loadModels() {
  const [list, known] = await Promise.all([api("v1/models").then((r) => r.json()),
    fetch("static/presets.json").then((r) => (r.ok ? r.json() : {}))]);
  presets = known;
  const select = $("model");
  select.replaceChildren();
  for (const m of list.data) {
    models[m.id] = m.rnnserve;
    select.append(new Option(`${m.id} (${m.rnnserve.kind})`, m.id));
  }
  pickModel();
}

function pickModel() {
  const info = models[$("model").value];
  if (!info) return;
  const lm = info.kind === "char_lm";
  $("lm").hidden = !lm;
  $("classifier").hidden = info.kind !== "classifier";
  $("translator").hidden = info.kind !== "translator";
  const sizes = info.sizes || {};
  $("model-info").textContent = `version ${info.version} · ${info.cell}` +
    (sizes.n_layer ? ` · ${sizes.n_layer} x ${sizes.hidden_size}` : "");
  if (!lm) return;
  $("layer").max = (sizes.n_layer || 1) - 1;
  $("unit").max = (sizes.hidden_size || 1) - 1;
  const quantity = $("quantity");
  quantity.replaceChildren(...(QUANTITIES[info.cell] || ["hidden"]).map((q) => new Option(q, q)));
  const preset = $("preset");
  preset.replaceChildren(new Option("choose a unit", ""));
  (presets[$("model").value] || []).forEach((p, i) => preset.append(new Option(p.label, String(i))));
  if (preset.options.length > 1) { preset.selectedIndex = 1; applyPreset(); }
}

function applyPreset() {
  const p = (presets[$("model").value] || [])[Number($("preset").value)];
  if (!p || $("preset").value === "") return;
  $("layer").value = p.layer;
  $("unit").value = p.unit;
  $("quantity").value = p.quantity;
  recolour();
}

// ---- generation over server-sent events
function number(id) { const v = $(id).value; return v === "" ? undefined : Number(v); }

async function* events(response) {
  // An SSE stream read with fetch (EventSource cannot POST): events end with a blank line.
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

function appendText(text) {
  const out = $("output"), frag = document.createDocumentFragment();
  for (const ch of text) {
    const span = document.createElement("span");
    span.textContent = ch;
    frag.append(span);
  }
  out.append(frag);
}

async function generate() {
  showError(null);
  const prompt = $("prompt").value;
  const body = { model: $("model").value, prompt, stream: true, flush_chars: 8,
    max_tokens: number("max_tokens"), temperature: number("temperature"), top_k: number("top_k"),
    top_p: number("top_p"), seed: number("seed") };
  const out = $("output");
  out.replaceChildren();
  appendText(prompt);
  out.querySelectorAll("span").forEach((s) => s.classList.add("prompt"));
  Object.assign(trace, { busy: false, again: false, stopped: false });
  running = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  $("lm-status").textContent = "generating…";
  try {
    const response = await api("v1/generate", body, running.signal);
    for await (const event of events(response)) {
      if (event.name === "error") throw new Error(event.data.error.message);
      if (event.data.text) appendText(event.data.text);
      scheduleTrace();
      const f = event.data.finished;
      if (f) {
        const u = f.usage || {};
        const reason = f.finish_reason.replace("FINISH_REASON_", "").toLowerCase();
        $("lm-status").textContent = `${reason} · ${u.generated_chars || 0} characters · first after ` +
          `${((u.time_to_first_char_s || 0) * 1000).toFixed(1)} ms · version ${f.version}`;
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(err);
    $("lm-status").textContent = err.name === "AbortError" ? "stopped" : "";
  } finally {
    running = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
  }
}

// ---- colouring by activation: the text so far is traced again whenever a trace finishes and more has arrived
function colour(v, lo, hi) {
  const t = Math.max(-1, Math.min(1, (2 * v - lo - hi) / ((hi - lo) || 1)));
  const end = t > 0 ? POSITIVE : NEGATIVE;
  return "rgb(" + end.map((e) => Math.round(255 + Math.abs(t) * (e - 255))).join(",") + ")";
}

function scheduleTrace() {
  if (!$("colour").checked || trace.stopped) return;
  if (trace.busy) { trace.again = true; return; }
  trace.busy = true;
  runTrace().finally(() => {
    trace.busy = false;
    if (trace.again) { trace.again = false; scheduleTrace(); }
  });
}

function recolour() {
  trace.stopped = false;
  scheduleTrace();
}

async function runTrace() {
  const spans = $("output").querySelectorAll("span");
  if (!spans.length) return;
  const quantity = $("quantity").value;
  const text = Array.from(spans, (s) => s.textContent).join("");
  try {
    const reply = await (await api("v1/trace", { model: $("model").value, text, layers: [number("layer")],
      units: [number("unit")] })).json();
    const values = reply.steps.map((s) => (s[quantity] || [0])[0]);
    const gate = quantity.endsWith("_gate");
    let lo = gate ? 0 : Math.min(...values), hi = gate ? 1 : Math.max(...values);
    if (hi <= lo) { lo -= 1; hi += 1; }
    $("lo").textContent = lo.toFixed(2);
    $("hi").textContent = hi.toFixed(2);
    values.forEach((v, i) => {
      spans[i].style.background = colour(v, lo, hi);
      spans[i].title = (v >= 0 ? "+" : "") + v.toFixed(3);
    });
  } catch (err) {
    trace.stopped = true;  // e.g. the text outgrew the server's max_trace_chars: the rest stays uncoloured
    $("lm-status").textContent = "colouring stopped: " + err.message;
  }
}

// ---- translation: the text streams in; with the alignment asked for, the final event carries it
const WORD_START = "\u2581";  // how SentencePiece-style subwords mark the start of a word

function tokenLabels(tokens) {
  // As the alignment page (service/interpret/alignpage.py) shows them: a word start's mark dropped, a piece that
  // continues a word prefixed with "·", special tokens ("</s>") and word-level tokens as they are.
  if (!tokens.some((t) => t.startsWith(WORD_START))) return tokens;
  return tokens.map((t) => (t.startsWith(WORD_START) ? t.slice(1) : /^<.*>$/.test(t) ? t : "·" + t));
}

function drawAlignment(a) {
  // Bahdanau et al. (2015), fig. 3: output tokens (rows) by source tokens (columns), each cell as dark as the
  // attention the output token paid to the source token.
  const source = tokenLabels(a.source_tokens), target = tokenLabels(a.target_tokens), S = source.length;
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  for (const s of source) head.append(Object.assign(document.createElement("th"), { textContent: s }));
  const body = table.createTBody();
  target.forEach((t, i) => {
    const row = body.insertRow();
    row.append(Object.assign(document.createElement("th"), { textContent: t }));
    source.forEach((s, j) => {
      const w = a.weights[i * S + j];
      const cell = row.insertCell();
      cell.style.background = colour(w, -1, 1);
      cell.title = `${t} ← ${s}: ${w.toFixed(3)}`;
    });
  });
  const key = document.createElement("p");
  key.className = "muted";
  key.innerHTML = '0 <span class="heat"></span> 1 · attention of an output token (row) on a source token (column)';
  $("alignment").replaceChildren(key, table);
}

async function translate() {
  showError(null);
  const body = { model: $("model").value, text: $("source").value, stream: true, flush_chars: 8,
    beam_size: number("beam_size"), max_tokens: number("translate_max_tokens"), return_attention: $("attention").checked };
  const out = $("translation");
  out.replaceChildren();
  $("alignment").replaceChildren();
  running = new AbortController();
  $("translate").disabled = true;
  $("stop-translate").disabled = false;
  $("translate-status").textContent = "translating…";
  try {
    const response = await api("v1/translate", body, running.signal);
    for await (const event of events(response)) {
      if (event.name === "error") throw new Error(event.data.error.message);
      if (event.data.text) out.append(event.data.text);
      const f = event.data.finished;
      if (f) {
        const u = f.usage || {};
        const reason = f.finish_reason.replace("FINISH_REASON_", "").toLowerCase();
        $("translate-status").textContent = `${reason} · ${u.source_tokens || 0} → ${u.generated_tokens || 0} ` +
          `tokens · first after ${((u.time_to_first_token_s || 0) * 1000).toFixed(1)} ms · version ${f.version}`;
        if (f.alignment) drawAlignment(f.alignment);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") showError(err);
    $("translate-status").textContent = err.name === "AbortError" ? "stopped" : "";
  } finally {
    running = null;
    $("translate").disabled = false;
    $("stop-translate").disabled = true;
  }
}

// ---- classification
async function classify() {
  showError(null);
  const texts = $("texts").value.split("\n").filter((t) => t.trim());
  try {
    const reply = await (await api("v1/classify", { model: $("model").value, texts })).json();
    const bars = $("bars");
    bars.replaceChildren();
    reply.results.forEach((r, i) => {
      const box = document.createElement("div");
      box.className = "result";
      const title = document.createElement("div");
      title.textContent = texts[i];
      box.append(title);
      const best = Math.max(...r.probabilities);
      r.labels.forEach((label, j) => {
        const p = r.probabilities[j] || 0;
        const row = document.createElement("div");
        row.className = "row";
        row.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span></span>';
        row.children[0].textContent = label;
        row.children[1].firstChild.style.width = (100 * p).toFixed(1) + "%";
        row.children[1].firstChild.style.display = "block";
        if (p === best) row.children[1].firstChild.classList.add("top");
        row.children[2].textContent = p.toFixed(3);
        box.append(row);
      });
      bars.append(box);
    });
    $("classify-status").textContent = `version ${reply.version}`;
  } catch (err) {
    showError(err);
  }
}

$("model").addEventListener("change", pickModel);
$("preset").addEventListener("change", applyPreset);
for (const id of ["layer", "unit", "quantity", "colour"]) $(id).addEventListener("change", recolour);
$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => running && running.abort());
$("classify").addEventListener("click", classify);
$("translate").addEventListener("click", translate);
$("stop-translate").addEventListener("click", () => running && running.abort());
$("token").addEventListener("change", () => {
  sessionStorage.setItem("rnnserve-token", $("token").value.trim());
  loadModels().then(() => showError(null), showError);
});
loadModels().catch(showError);
