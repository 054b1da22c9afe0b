// vaekit latent explorer: plain JavaScript, no build step.
"use strict";

const COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
                 "#ccb974", "#64b5cd"];
const state = { models: [], z: {}, maps: {}, picked: [] };
const $ = (sel) => document.querySelector(sel);

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
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
    rows.append(row(`${m.name.toUpperCase()}: z ~ GMM`,
      data.gmm[m.name].map((b, i) => img(b, `${m.name} gmm sample ${i}`)), { "data-model": m.name, "data-sampler": "gmm" }));
  }
}

// 2. exploring -------------------------------------------------------------------------------------------------
let decodeTimer = null;
function scheduleDecode() {
  clearTimeout(decodeTimer);
  decodeTimer = setTimeout(decodeCurrent, 30);
}

async function decodeCurrent() {
  const name = $("#explore-model").value;
  const response = await postJSON("/api/decode", { model: name, z: state.z[name], label: chosenLabel() });
  const url = URL.createObjectURL(await response.blob());
  const el = $("#explore-img");
  const old = el.src;
  el.src = url;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
}

function buildSliders() {
  const name = $("#explore-model").value;
  const model = state.models.find((m) => m.name === name);
  const box = $("#sliders");
  box.replaceChildren();
  const shown = Math.min(model.latent_dim, 16);
  for (let i = 0; i < shown; i++) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { type: "range", min: -3, max: 3, step: 0.05, value: state.z[name][i] });
    input.dataset.dim = i;
    const value = document.createElement("span");
    value.textContent = Number(input.value).toFixed(2);
    input.addEventListener("input", () => {
      state.z[name][i] = Number(input.value);
      value.textContent = Number(input.value).toFixed(2);
      scheduleDecode();
    });
    label.append(`z${i + 1}`, input, value);
    box.append(label);
  }
  if (model.latent_dim > shown) box.append(`(+ ${model.latent_dim - shown} more dimensions, set from the map)`);
}

async function drawMap() {
  const name = $("#explore-model").value;
  if (!state.maps[name]) state.maps[name] = await (await api(`/api/map?model=${encodeURIComponent(name)}`)).json();
  const map = state.maps[name];
  const canvas = $("#map");
  const ctx = canvas.getContext("2d");
  const xs = map.points.map((p) => p[0]), ys = map.points.map((p) => p[1]);
  const extent = Math.max(3.5, ...xs.map(Math.abs), ...ys.map(Math.abs)) * 1.05;
  map.scale = canvas.width / (2 * extent);
  const toPx = (u, v) => [canvas.width / 2 + u * map.scale, canvas.height / 2 - v * map.scale];
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  map.points.forEach((p, i) => {
    const [x, y] = toPx(p[0], p[1]);
    ctx.fillStyle = COLOURS[map.labels[i] % 10];
    ctx.fillRect(x - 1, y - 1, 2, 2);
  });
  ctx.strokeStyle = "#000";
  for (const r of [1, 2, 3]) {
    ctx.beginPath();
    ctx.arc(canvas.width / 2, canvas.height / 2, r * map.scale, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

function mapClick(event) {
  const name = $("#explore-model").value;
  const map = state.maps[name];
  const canvas = $("#map");
  const rect = canvas.getBoundingClientRect();
  const u = (event.clientX - rect.left - canvas.width / 2) / map.scale;
  const v = -(event.clientY - rect.top - canvas.height / 2) / map.scale;
  state.z[name] = map.offset.map((o, d) => o + u * map.basis[0][d] + v * map.basis[1][d]);
  buildSliders();
  scheduleDecode();
}

async function switchModel() {
  buildSliders();
  await drawMap();
  await decodeCurrent();
}

// 3. upload -----------------------------------------------------------------------------------------------------
async function upload(file) {
  const form = () => { const f = new FormData(); f.append("file", file); return f; };
  const recon = await (await api(withLabel("/api/reconstruct"), { method: "POST", body: form() })).json();
  const box = $("#recon");
  box.replaceChildren(row("your image", [img(recon.input, "input")]));
  for (const m of state.models) box.append(row(`${m.name.toUpperCase()} reconstruction`, [img(recon[m.name], `${m.name} reconstruction`)], { id: `recon-${m.name}` }));
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
    el.addEventListener("click", () => pick(i, el));
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
  picker.addEventListener("change", guard(async () => {
    await decodeCurrent();
    if ($("#sample-rows").childElementCount) await sample();
  }));
}

// start -------------------------------------------------------------------------------------------------------------
function guard(fn) {
  return async (...args) => {
    try { showError(""); await fn(...args); } catch (e) { showError(e.message); }
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
  select.value = state.models.some((m) => m.kind === "vae") ? state.models.find((m) => m.kind === "vae").name : state.models[0].name;
  select.addEventListener("change", guard(switchModel));
  $("#sample-btn").addEventListener("click", guard(sample));
  $("#map").addEventListener("click", guard(mapClick));
  $("#upload-input").addEventListener("change", guard(async (e) => e.target.files[0] && upload(e.target.files[0])));
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", guard(async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) await upload(e.dataTransfer.files[0]);
  }));
  await switchModel();
  await buildStrip();
  document.body.dataset.ready = "1";
}

window.addEventListener("DOMContentLoaded", guard(main));
