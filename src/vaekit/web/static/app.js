// vaekit latent explorer: plain JavaScript, no build step.
"use strict";

const COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                 "#ccb974", "#64b5cd"];
const state = { models: [], z: {}, maps: {}, picked: [] };
const $ = (sel) => document.querySelector(sel);

// Each section reports its own work: "working..." while a request runs, then nothing, or the error, beside the
// control that caused it; a failed request also clears that section's stale results.
function setStatus(section, message, isError = false) {
  const box = document.querySelector(`#${section} .status`);
  box.textContent = message;
  box.classList.toggle("error", isError);
}

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (e) {  // no answer at all: the server stopped, or the network is down
    throw new Error(`${path}: no answer from the vaekit server (${e.message}); is \`vaekit serve\` still running? Start it again and reload this page.`);
  }
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${path}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return response;
}

// the class a conditional model works in (the picker in the header); undefined when no model is conditional
const chosenLabel = () => ($("#class-box").hidden ? undefined : Number($("#label").value));
const withLabel = (path) => (chosenLabel() === undefined ? path : `${path}${path.includes("?") ? "&" : "?"}label=${chosenLabel()}`);

const postJSON = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

function img(b64, alt) {
  const el = document.createElement("img");
  el.src = "data:image/png;base64," + b64;
  el.alt = alt;
  return el;
}

function row(name, images, attrs = {}) {
  const div = document.createElement("div");
  div.className = "row";
  Object.entries(attrs).forEach(([k, v]) => div.setAttribute(k, v));
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  div.append(label, ...images);
  return div;
}

// 1. sampling ------------------------------------------------------------------------------------------------
async function sample() {
  const n = Number($("#sample-n").value);
  const data = await (await postJSON("/api/sample", { n, label: chosenLabel() })).json();
  const rows = $("#sample-rows");
  rows.replaceChildren();
  for (const m of state.models) {
    rows.append(row(`${m.name.toUpperCase()}: z ~ N(0, I)`,
      data.images[m.name].map((b, i) => img(b, `${m.name} sample ${i}`)), { "data-model": m.name, "data-sampler": "prior" }));
  }
  for (const m of state.models) {
    rows.append(row(`${m.name.toUpperCase()}: z ~ ${data.fitted[m.name]}`,
      data.gmm[m.name].map((b, i) => img(b, `${m.name} gmm sample ${i}`)), { "data-model": m.name, "data-sampler": "gmm" }));
  }
}

// 2. exploring -------------------------------------------------------------------------------------------------
let decodeTimer = null;
function scheduleDecode() {
  clearTimeout(decodeTimer);
  decodeTimer = setTimeout(guard("explore", decodeCurrent, ["#explore-img"]), 30);
}

let decodeCount = 0;  // answers to older requests than the newest are dropped: the picture is always the last z
async function decodeCurrent() {
  const name = $("#explore-model").value;
  const mine = ++decodeCount;
  const response = await postJSON("/api/decode", { model: name, z: state.z[name], label: chosenLabel() });
  const blob = await response.blob();
  if (mine !== decodeCount) return;
  const url = URL.createObjectURL(blob);
  const el = $("#explore-img");
  const old = el.src;
  el.src = url;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

function buildSliders() {
  const name = $("#explore-model").value;
  const model = state.models.find((m) => m.name === name);
  const limit = state.maps[name] ? state.maps[name].limit : 3;  // covers every test code's values
  const box = $("#sliders");
  box.replaceChildren();
  const shown = Math.min(model.latent_dim, 16);
  for (let i = 0; i < shown; i++) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -limit, max: limit, step: 0.05, value: state.z[name][i] });
    input.dataset.dim = i;
    input.setAttribute("aria-label", `z${i + 1}`);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = state.z[name][i].toFixed(2);  // the real value, even beyond the slider's range
    input.addEventListener("input", () => {
      state.z[name][i] = Number(input.value);
      value.textContent = state.z[name][i].toFixed(2);
      if (state.clicked) {  // the point on the map no longer is this z: its cross goes
        state.clicked = null;
        drawMap();
      }
      showZ();
      scheduleDecode();
    });
    label.append(`z${i + 1}`, input, value);
    box.append(label);
  }
  if (model.latent_dim > shown) box.append(`(+ ${model.latent_dim - shown} more dimensions, set from the map)`);
}

// The map: test codes projected on a plane of two directions. Through the origin, a point (u, v) is the code
// z = u * b1 + v * b2 and N(0, I)'s circles are true; through the codes' mean, z = mean + u * b1 + v * b2 decodes
// like the codes, and the readout says how far from the origin that z really is.
function planeOffset(map) {
  return $("#plane").value === "mean" ? map.offset : map.offset.map(() => 0);
}

async function drawMap() {
  const name = $("#explore-model").value;
  if (!state.maps[name]) state.maps[name] = await (await api(`/api/map?model=${encodeURIComponent(name)}`)).json();
  const map = state.maps[name];
  const canvas = $("#map");
  const ctx = canvas.getContext("2d");
  const xs = map.points.map((p) => p[0]), ys = map.points.map((p) => p[1]);
  const extent = Math.max(3.5, ...xs.map(Math.abs), ...ys.map(Math.abs)) * 1.08;
  map.scale = canvas.width / (2 * extent);
  const toPx = (u, v) => [canvas.width / 2 + u * map.scale, canvas.height / 2 - v * map.scale];
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  drawAxes(ctx, canvas, map, extent, toPx);
  map.points.forEach((p, i) => {
    const [x, y] = toPx(p[0], p[1]);
    ctx.fillStyle = map.labelled ? COLOURS[map.labels[i] % 10] : COLOURS[0];
    ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
  });
  ctx.strokeStyle = "#000";
  for (const r of [1, 2, 3]) {
    ctx.beginPath();
    ctx.setLineDash(r > 1 ? [4, 3] : []);
    ctx.arc(canvas.width / 2, canvas.height / 2, r * map.scale, 0, 2 * Math.PI);
    ctx.stroke();
  }
  ctx.setLineDash([]);
  if (state.clicked) {  // the point whose z is decoded
    const [x, y] = toPx(...state.clicked);
    ctx.strokeStyle = "#c00";
    ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(x - 7, y - 7); ctx.lineTo(x + 7, y + 7); ctx.moveTo(x + 7, y - 7); ctx.lineTo(x - 7, y + 7);
    ctx.stroke();
    ctx.lineWidth = 1;
  }
  buildLegend(map);
}

function drawAxes(ctx, canvas, map, extent, toPx) {
  const step = [1, 2, 5, 10, 20, 50, 100].find((s) => extent / s <= 4) || 200;  // about 6 to 8 labelled lines
  ctx.strokeStyle = "#ddd";
  ctx.fillStyle = "#555";
  ctx.font = "11px system-ui, sans-serif";
  for (let t = -Math.floor(extent / step) * step; t <= extent; t += step) {
    const [x] = toPx(t, 0), [, y] = toPx(0, t);
    ctx.beginPath(); ctx.moveTo(x, 0); ctx.lineTo(x, canvas.height); ctx.moveTo(0, y); ctx.lineTo(canvas.width, y);
    ctx.stroke();
    if (t !== 0) { ctx.fillText(String(t), x + 2, canvas.height - 4); ctx.fillText(String(t), 3, y - 2); }
  }
  const [first, second] = map.axes.split(", ");  // the axis names at the edges, on a white ground
  ctx.font = "bold 12px system-ui, sans-serif";
  for (const [text, x, y] of [[`${first} →`, canvas.width - 58, canvas.height - 18], [`↑ ${second}`, 26, 14]]) {
    ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
    ctx.fillRect(x - 3, y - 12, ctx.measureText(text).width + 6, 16);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x, y);
  }
}

function buildLegend(map) {
  const names = state.models[0].classes;
  const legend = $("#legend");
  legend.replaceChildren();
  if (!map.labelled) { legend.textContent = "one colour: the data has no labels"; return; }
  [...new Set(map.labels)].sort((a, b) => a - b).forEach((c) => {
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${COLOURS[c % 10]}"></i>`;
    item.append(names[c] || String(c));
    legend.append(item);
  });
}

function showZ() {
  const name = $("#explore-model").value;
  const map = state.maps[name];
  const z = state.z[name];
  const norm = Math.sqrt(z.reduce((s, v) => s + v * v, 0));
  const where = norm <= map.radius99 ? "inside" : "outside";
  $("#z-readout").textContent = `decoded z: |z| = ${norm.toFixed(2)}, ${where} N(0, I)'s 99% ball (radius ` +
    `${map.radius99.toFixed(2)})` + (state.clicked ? `; map point (${state.clicked.map((v) => v.toFixed(2)).join(", ")})` : "");
}

function mapClick(event) {
  const name = $("#explore-model").value;
  const map = state.maps[name];
  const canvas = $("#map");
  const rect = canvas.getBoundingClientRect();  // the content box: inside the border, drawn smaller or not
  const px = (event.clientX - rect.left - canvas.clientLeft) * canvas.width / canvas.clientWidth;
  const py = (event.clientY - rect.top - canvas.clientTop) * canvas.height / canvas.clientHeight;
  return pickPoint((px - canvas.width / 2) / map.scale, -(py - canvas.height / 2) / map.scale);
}

function pickPoint(u, v) {  // decode the map's point (u, v): z on the plane, the red cross there
  const name = $("#explore-model").value;
  const map = state.maps[name];
  state.clicked = [u, v];
  state.z[name] = planeOffset(map).map((o, d) => o + u * map.basis[0][d] + v * map.basis[1][d]);
  buildSliders();
  showZ();
  scheduleDecode();
  return drawMap();
}

const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };

function mapKey(event) {  // the keyboard's way over the map: arrows move the point (Shift: 5x), from the origin
  const step = ARROWS[event.key];
  if (!step) return undefined;
  event.preventDefault();
  const size = event.shiftKey ? 0.5 : 0.1;
  const [u, v] = state.clicked || [0, 0];
  return pickPoint(u + step[0] * size, v + step[1] * size);
}

async function switchModel() {
  state.clicked = null;
  await drawMap();
  buildSliders();
  showZ();
  await decodeCurrent();
}

// 3. upload -----------------------------------------------------------------------------------------------------
async function upload(file) {
  $("#recon").replaceChildren();
  $("#posterior").replaceChildren();
  const form = () => { const f = new FormData(); f.append("file", file); return f; };
  const recon = await (await api(withLabel("/api/reconstruct"), { method: "POST", body: form() })).json();
  const box = $("#recon");
  box.replaceChildren(row("your image, as the models see it", [img(recon.input, "input")]));
  const notes = document.createElement("p");
  notes.className = "hint";
  notes.textContent = recon.notes.join("; ");
  box.append(notes);
  for (const m of state.models) {
    const where = recon.maps[m.name];
    box.append(row(`${m.name.toUpperCase()} reconstruction, and where it finds your image unlikely`, [img(recon[m.name], `${m.name} reconstruction`), img(where.png, `${m.name} anomaly map`)], { id: `recon-${m.name}` }));
    const said = document.createElement("p");
    said.className = "hint";
    said.textContent = `${m.name.toUpperCase()}: -log p(x|z) per pixel (black: as low as the lowest 0.5% of test-image pixels; yellow: as high as the top 0.5%). ` +
      `Its score (the mean of the top 1% of the map) is above ${(100 * where.above).toFixed(0)}% of the test images'.`;
    box.append(said);
  }
  const enc = await (await api(withLabel("/api/encode"), { method: "POST", body: form() })).json();
  const post = $("#posterior");
  post.replaceChildren();
  for (const m of state.models) {
    const e = enc[m.name];
    if (e.sigma) {
      post.append(row(`${m.name.toUpperCase()}: z = mu + sigma * eps`, e.decoded.map((b, i) => img(b, `${m.name} posterior sample ${i}`)), { id: `posterior-${m.name}` }));
      const p = document.createElement("p");
      p.className = "sigma";
      p.textContent = `mu = [${e.mu.map((v) => v.toFixed(2)).join(", ")}]\nsigma = [${e.sigma.map((v) => v.toFixed(2)).join(", ")}]`;
      post.append(p);
    } else {
      const p = document.createElement("p");
      p.className = "sigma";
      p.textContent = `${m.name.toUpperCase()}: one code, z = E(x) = [${e.z.map((v) => v.toFixed(2)).join(", ")}]: no distribution to sample.`;
      post.append(p);
    }
  }
}

// 4. interpolation ------------------------------------------------------------------------------------------------
async function buildStrip() {
  const data = await (await api("/api/test-images?start=0&count=24")).json();
  const strip = $("#strip");
  data.images.forEach((b, i) => {
    const el = img(b, `test image ${i}`);
    el.dataset.index = i;
    Object.assign(el, { tabIndex: 0, title: `test image ${i}: press Enter to pick` });
    el.setAttribute("role", "button");
    const choose = guard("interp", () => pick(i, el), ["#interp-rows"]);
    el.addEventListener("click", choose);
    el.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } });
    strip.append(el);
  });
}

async function pick(index, el) {
  state.picked.push([index, el]);
  if (state.picked.length > 2) state.picked.shift()[1].classList.remove("picked");
  el.classList.add("picked");
  if (state.picked.length < 2) return;
  const [a, b] = state.picked.map((p) => p[0]);
  const data = await (await postJSON("/api/interpolate", { a, b, steps: 8 })).json();
  const rows = $("#interp-rows");
  rows.replaceChildren(...state.models.map((m) =>
    row(m.name.toUpperCase(), data[m.name].map((s, i) => img(s, `${m.name} step ${i}`)), { "data-model": m.name })));
}

// the class picker, for conditional models ---------------------------------------------------------------------------
function buildClassPicker() {
  const count = Math.max(0, ...state.models.map((m) => m.conditional));
  if (!count) return;
  const names = state.models[0].classes;
  const picker = $("#label");
  for (let i = 0; i < count; i++) picker.append(new Option(names[i] && names[i] !== String(i) ? `${i}: ${names[i]}` : String(i), String(i)));
  $("#class-box").hidden = false;
  picker.addEventListener("change", guard("top", async () => {
    await decodeCurrent();
    if ($("#sample-rows").childElementCount) await sample();
  }));
}

// start -------------------------------------------------------------------------------------------------------------
function guard(section, fn, results = []) {
  return async (...args) => {
    setStatus(section, "working…");
    try {
      await fn(...args);
      setStatus(section, "");
    } catch (e) {
      results.forEach((sel) => { const el = $(sel); if (el.tagName === "IMG") el.removeAttribute("src"); else el.replaceChildren(); });
      setStatus(section, e.message, true);
    }
  };
}

async function main() {
  state.models = await (await api("/api/models")).json();
  $("#models-line").textContent = state.models.map((m) =>
    `${m.name.toUpperCase()}: ${m.arch}, latent ${m.latent_dim}, images ${m.image_shape.join("x")}`).join(" | ");
  const select = $("#explore-model");
  for (const m of state.models) {
    state.z[m.name] = new Array(m.latent_dim).fill(0);
    select.append(new Option(m.name.toUpperCase(), m.name));
  }
  buildClassPicker();
  const vae = state.models.find((m) => m.kind === "vae");
  select.value = (vae || state.models[0]).name;
  select.addEventListener("change", guard("explore", switchModel, ["#explore-img"]));
  $("#plane").addEventListener("change", guard("explore", switchModel));
  $("#sample-btn").addEventListener("click", guard("sample", sample, ["#sample-rows"]));
  $("#map").addEventListener("click", guard("explore", mapClick));
  const keyed = guard("explore", mapKey);
  $("#map").addEventListener("keydown", (event) => { if (ARROWS[event.key]) keyed(event); });
  const uploading = (file) => guard("upload", () => upload(file), ["#recon", "#posterior"])();
  $("#upload-input").addEventListener("change", (e) => e.target.files[0] && uploading(e.target.files[0]));
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) uploading(e.dataTransfer.files[0]);
  });
  await guard("sample", sample, ["#sample-rows"])();  // the page opens with samples, not an empty box
  await guard("explore", switchModel)();
  await guard("interp", buildStrip)();
  document.body.dataset.ready = "1";
}

window.addEventListener("DOMContentLoaded", guard("top", main));
