// The bertkit serve page: pick a model, type a text, see what the model says and why. Plain DOM, no framework.
"use strict";

const $ = (id) => document.getElementById(id);
let models = [];
let lastTitle = "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") node.style.cssText = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const data = await r.json();
  if (!r.ok) throw new Error(`${r.status} ${data.error_type}: ${data.error}`);
  return data;
}

function current() { return models.find((m) => m.name === $("model").value) || models[0]; }

function showFields() {
  const m = current();
  const task = m ? m.task : "";
  $("task").textContent = task;
  $("question-row").hidden = task !== "question-answering";
  $("text-label").textContent = task === "question-answering" ? "Context" : "Text";
  $("pair-row").hidden = task !== "text-classification";
  $("explain-row").hidden = task !== "text-classification";
}

// Attribution colours: blue supports the explained label, red speaks against it; strength = |score| / max |score|.
function colour(score, max) {
  const a = max > 0 ? Math.min(1, Math.abs(score) / max) * 0.65 : 0;
  return score >= 0 ? `rgba(9, 105, 218, ${a.toFixed(3)})` : `rgba(207, 34, 46, ${a.toFixed(3)})`;
}

function scoredWords(text, words, scores, paint) {
  const max = Math.max(...scores.map(Math.abs), 0);
  const out = el("p", { class: "words" });
  let at = 0;
  words.forEach((w, i) => {
    if (w.sequence && w.sequence !== 0) return; // second text of a pair: shown on its own
    if (w.start > at) out.append(text.slice(at, w.start));
    out.append(el("span", { class: "word", style: `background:${paint(scores[i], max)}`,
      title: `${w.text}: ${scores[i].toFixed(4)}`, "data-score": scores[i].toFixed(6) }, text.slice(w.start, w.end)));
    at = w.end;
  });
  if (at < text.length) out.append(text.slice(at));
  return out;
}

function bars(probs, best) {
  const grid = el("div", { class: "bars", role: "list" });
  for (const [label, p] of Object.entries(probs)) {
    const pct = Math.max(0, Math.min(100, p * 100));
    const top = label === best;  // the predicted one: darker and bold, no hue of the word colouring
    grid.append(
      el("span", top ? { role: "listitem", class: "best" } : { role: "listitem" }, label),
      el("div", { class: top ? "bar best" : "bar", role: "meter", "aria-label": label,
        "aria-valuemin": "0", "aria-valuemax": "1", "aria-valuenow": String(p) }, el("span", { style: `width:${pct}%` })),
      el("span", { class: "value" }, p.toFixed(3)));
  }
  return grid;
}

function highlighted(text, spans, cls, label) {
  const out = el("p", { class: "words" });
  let at = 0;
  for (const s of [...spans].sort((a, b) => a.start - b.start)) {
    if (s.start < at || s.start < 0) continue;
    out.append(text.slice(at, s.start));
    const mark = el("mark", { class: cls, title: `${label(s)} (${s.score.toFixed(3)})` }, text.slice(s.start, s.end));
    if (cls === "entity") mark.append(el("small", {}, label(s)));
    out.append(mark);
    at = s.end;
  }
  out.append(text.slice(at));
  return out;
}

async function analyse() {
  const m = current();
  const text = $("text").value;
  const result = $("result");
  if (!text.trim()) { $("text").focus(); return; }
  $("submit").disabled = true;
  $("status").textContent = "working…";
  const parts = [];
  try {
    if (m.task === "text-classification") {
      const pair = $("pair").value.trim() || undefined;
      const method = $("method").value;
      const methods = $("rollout").checked ? [method, "attention"] : [method];
      const [pred, why] = await Promise.all([
        post("/predict", { model: m.name, inputs: [text], ...(pair ? { pairs: [pair] } : {}) }),
        post("/explain", { model: m.name, text, ...(pair ? { pair } : {}), methods })]);
      const p = pred.predictions[0];
      parts.push(el("h2", {}, p.label !== undefined ? `Prediction: ${p.label}` : "Prediction"));
      if (p.probs) parts.push(bars(p.probs, p.label));
      else parts.push(el("p", {}, `value ${p.value}`));
      const name = $("method").selectedOptions[0].textContent;
      parts.push(el("h2", {}, `Words by ${name} for “${why.target}”`),
        el("p", { class: "legend" }, "blue: speaks for the label, red: against; stronger colour, larger effect"),
        scoredWords(text, why.words, why.word_scores[method], colour));
      if (why.rollout) {
        parts.push(el("h2", {}, "Attention rollout"),
          el("p", { class: "legend" }, "how much attention flows from [CLS] to each word through all layers"),
          scoredWords(text, why.words, why.rollout, (s, max) => `rgba(130, 80, 223, ${(max > 0 ? s / max * 0.6 : 0).toFixed(3)})`));
      }
      for (const note of why.notes) parts.push(el("p", { class: "legend" }, `note: ${note}`));
    } else if (m.task === "token-classification") {
      const r = (await post("/predict", { model: m.name, inputs: [text] })).predictions[0];
      parts.push(el("h2", {}, `Entities (${r.entities.length})`), highlighted(text, r.entities, "entity", (e) => e.entity));
    } else if (m.task === "question-answering") {
      const question = $("question").value;
      const r = (await post("/predict", { model: m.name, questions: [question], contexts: [text] })).predictions[0];
      parts.push(el("h2", {}, r.answer ? `Answer: ${r.answer}` : "No answer found"), el("p", {}, `Q: ${question}`),
        highlighted(text, r.answer ? [r] : [], "answer", () => "answer"));
    } else if (m.task === "fill-mask") {
      const r = (await post("/predict", { model: m.name, inputs: [text] })).predictions[0];
      const fills = Array.isArray(r[0]) ? r[0] : r;
      parts.push(el("h2", {}, "Fillers of [MASK]"), bars(Object.fromEntries(fills.map((f) => [f.token, f.score])), fills[0].token));
    } else {
      const r = await post("/embed", { model: m.name, inputs: [text] });
      const v = r.embeddings[0];
      parts.push(el("h2", {}, `Embedding (${v.length} numbers)`), el("pre", {}, v.slice(0, 16).map((x) => x.toFixed(4)).join(" ") + " …"));
    }
    lastTitle = `${m.name}: ${text.slice(0, 60)}`;
    result.replaceChildren(...parts);
    $("download").disabled = false;
    $("status").textContent = `done (${m.name})`;
  } catch (err) {
    result.replaceChildren(el("p", { class: "error", role: "alert" }, err.message));
    $("status").textContent = "error";
  } finally {
    $("submit").disabled = false;
  }
}

// A self-contained copy of the current result: the page's stylesheet inlined, no script, no server needed.
async function download() {
  const css = await (await fetch("/static/style.css")).text();
  const doc = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<title>${lastTitle.replace(/[<&]/g, "")}</title><style>${css}</style></head><body><main>` +
    `<h1>bertkit</h1><p class="legend">${new Date().toISOString()}</p>${$("result").innerHTML}</main></body></html>`;
  const a = el("a", { href: URL.createObjectURL(new Blob([doc], { type: "text/html" })), download: "bertkit-result.html" });
  document.body.append(a);
  a.click();
  a.remove();
}

async function start() {
  try {
    const info = await (await fetch("/info")).json();
    models = info.models;
    $("model").replaceChildren(...models.map((m) => el("option", { value: m.name }, `${m.name} (${m.task})`)));
    $("status").textContent = `${models.length} model${models.length === 1 ? "" : "s"} ready`;
  } catch (err) {
    $("status").textContent = `cannot reach the server: ${err.message}`;
  }
  showFields();
}

$("model").addEventListener("change", showFields);
$("form").addEventListener("submit", (e) => { e.preventDefault(); analyse(); });
$("text").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); analyse(); }
});
$("download").addEventListener("click", download);
start();
