// atelier's page: builds its form from GET /v1/models and sends each method by its kind: a student (POST
// /v1/stylize with model=, one pass), a one-pass method (POST /v1/stylize with method= and the style image(s) it
// takes, one pass) or an engine job (POST /v1/jobs, then polls GET /v1/jobs/{id}); it shows the result with a
// download link. A student's style is as /v1/models lists it: baked in (nothing to choose), named (a style set: the
// page lists its styles, to tick one or several, blended by weights, sent as style=<name> text fields with
// style_weights) or required (a style image upload, as for a one-pass method). The options shown for a method are
// the ones /v1/models lists for it; one bounded on both sides (strength, 0..1, which every method reads) is a
// slider.
// Every error the service answers is {"error": "..."}; the page shows that message as it is.
// Writes carry X-Atelier-Request: 1 (the service refuses writes without it: another site's form cannot send it).
// A job is readable only with the token POST /v1/jobs gave: the page keeps it in memory (never in a URL or in
// storage) and sends it as Authorization: Bearer; the result is fetched with it and shown as a blob: URL, since an
// <img src> cannot send headers.
"use strict";

// Options shown at once; a method's other options go under "More options".
const MAIN_OPTIONS = {
  student: ["size", "tile", "strength"],
  "one-pass": ["size", "strength", "style_scale"],
  engine: ["size", "iterations", "strength", "style_weight", "preserve_color", "seed"],
};
const GROUPS = [  // [kind, the /v1/models list, the menu's heading]
  ["student", "students", "Students (one pass, fast)"],
  ["one-pass", "one_pass", "One pass, with your style image"],
  ["engine", "engines", "Engines (optimisation, with your style image)"],
];
const POLL_MS = 400;
const WRITE_HEADERS = { "X-Atelier-Request": "1" };

const $ = (id) => document.getElementById(id);
let catalog = null;     // the /v1/models answer
let resultUrl = null;   // a blob: URL to revoke when the next result replaces it
let busy = false;
const jobTokens = new Map();  // job id -> its token, for this page's life only

function jobHeaders(id) {
  return { Authorization: `Bearer ${jobTokens.get(id)}` };
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

function setBusy(on) {
  busy = on;
  $("submit").disabled = on || !catalog;
}

async function errorOf(response) {
  // The service's errors are JSON; a proxy in between may answer otherwise, so fall back to the status line.
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") {
      const retry = response.headers.get("Retry-After");
      return retry ? `${body.error} (retry after ${retry} s)` : body.error;
    }
  } catch (_) { /* not JSON */ }
  return `the service answered ${response.status} ${response.statusText}`;
}

function selected() {
  const value = $("model").value;
  const colon = value.indexOf(":");
  if (colon < 0) return null;
  return { kind: value.slice(0, colon), name: value.slice(colon + 1) };
}

function entryOf(choice) {
  // The /v1/models entry of the chosen student, one-pass method or engine.
  const group = GROUPS.find((g) => g[0] === choice.kind);
  return group && catalog ? (catalog[group[1]] || []).find((x) => x.name === choice.name) : undefined;
}

function styleOf(choice) {
  // "baked", "named" or "required": what the choice paints from (engines and one-pass methods: style images).
  const e = entryOf(choice);
  return choice.kind === "engine" ? "required" : (e && e.style) || "required";
}

function maxStyles(choice) {
  // How many style images the choice takes: none for a baked style or a style set, else its own most.
  if (styleOf(choice) !== "required") return 0;
  const e = entryOf(choice);
  return choice.kind === "engine" ? catalog.limits.max_styles : (e ? e.max_styles : 1);
}

function optionInput(opt) {
  const wrap = document.createElement("label");
  wrap.className = "option";
  wrap.title = opt.help || "";
  const caption = document.createElement("span");
  caption.textContent = opt.name.replace(/_/g, " ");
  wrap.appendChild(caption);
  let input;
  if (opt.choices && opt.choices.length) {
    input = document.createElement("select");
    for (const choice of opt.choices) {
      const o = document.createElement("option");
      o.value = o.textContent = choice;
      o.selected = choice === opt.default;
      input.appendChild(o);
    }
  } else if (opt.type === "float" && opt.min !== undefined && opt.max !== undefined) {
    // A slider, its value shown beside it.
    input = document.createElement("input");
    input.type = "range";
    input.min = String(opt.min);
    input.max = String(opt.max);
    input.step = String((opt.max - opt.min) / 20);
    input.value = String(opt.default === null || opt.default === undefined ? opt.max : opt.default);
    const shown = document.createElement("output");
    shown.id = `opt-${opt.name}-value`;
    shown.textContent = Number(input.value).toFixed(2);
    input.addEventListener("input", () => { shown.textContent = Number(input.value).toFixed(2); });
    caption.append(" ", shown);
  } else {
    input = document.createElement("input");
    if (opt.type === "int" || opt.type === "float") {
      input.type = "number";
      input.step = opt.type === "int" ? "1" : "any";
      if (opt.min !== undefined) input.min = String(opt.min);
      if (opt.max !== undefined) input.max = String(opt.max);
    } else {
      input.type = "text";
    }
    const d = opt.default;
    input.value = d === null || d === undefined ? "" : Array.isArray(d) ? d.join(",") : String(d);
    if (d === null) input.placeholder = "default";
  }
  input.id = `opt-${opt.name}`;
  input.name = opt.name;
  wrap.appendChild(input);
  return wrap;
}

function showWeights() {
  // A weight beside each ticked style, once two or more are ticked (one style needs none).
  const boxes = Array.from(document.querySelectorAll("#styles-list .style-pick"));
  const blending = boxes.filter((b) => b.checked).length > 1;
  for (const b of boxes) $(b.dataset.weight).classList.toggle("off", !(blending && b.checked));
}

function renderStyles(e) {
  // A style set's styles: a tick box each (the first ticked), with its painting's file name and a blend weight.
  const list = $("styles-list");
  list.replaceChildren();
  e.styles.forEach((s, i) => {
    const row = document.createElement("div");
    row.className = "style-choice";
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.className = "style-pick";
    box.id = `style-pick-${i}`;
    box.value = s.name;
    box.checked = i === 0;
    box.dataset.weight = `style-weight-${i}`;
    box.addEventListener("change", showWeights);
    label.append(box, ` ${s.name}`);
    if (s.painting) {
      const painting = document.createElement("span");
      painting.className = "help";
      painting.textContent = ` (${s.painting})`;
      label.append(painting);
    }
    const weight = document.createElement("input");
    weight.type = "number";
    weight.min = "0";
    weight.step = "any";
    weight.value = "1";
    weight.id = `style-weight-${i}`;
    weight.title = `the share of ${s.name} in the blend`;
    weight.setAttribute("aria-label", `weight of ${s.name}`);
    row.append(label, weight);
    list.appendChild(row);
  });
  showWeights();
}

function renderOptions() {
  const choice = selected();
  const main = $("options");
  const more = $("advanced-options");
  main.replaceChildren();
  more.replaceChildren();
  $("style-row").hidden = true;
  $("styles-row").hidden = true;
  $("advanced").hidden = true;
  if (!choice || !catalog) return;
  const e = entryOf(choice);
  const style = styleOf(choice);
  let options = e ? e.options : [];
  const how = choice.kind === "engine" ? "runs as a job, with its progress shown below"
    : style === "named" ? `one pass, in one of its ${e.styles.length} styles or a blend of several`
    : style === "required" ? "one pass, in the style of the image you give it" : "";
  $("model-help").textContent = e ? (how ? `${e.description}; ${how}` : e.description) : "";
  if (choice.kind === "student" && !options) options = catalog.student_options;
  if (style === "named") {
    renderStyles(e);
    $("styles-row").hidden = false;
    options = options.filter((o) => o.name !== "style_weights");  // the styles' weights set it
  }
  const most = maxStyles(choice);
  $("style").multiple = most > 1;
  $("style-label").textContent = most > 1 ? `Style images (up to ${most})` : "Style image";
  $("style-row").hidden = most === 0;
  const mainNames = MAIN_OPTIONS[choice.kind] || ["size"];
  for (const opt of options) {
    (mainNames.includes(opt.name) ? main : more).appendChild(optionInput(opt));
  }
  $("advanced").hidden = more.children.length === 0;
}

async function loadModels() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new Error(await errorOf(response));
    catalog = await response.json();
  } catch (err) {
    showError(`cannot list the models: ${err.message}`);
    return;
  }
  const select = $("model");
  select.replaceChildren();
  for (const [kind, list, label] of GROUPS) {
    const group = document.createElement("optgroup");
    group.label = label;
    for (const m of catalog[list] || []) {
      const o = document.createElement("option");
      o.value = `${kind}:${m.name}`;
      const available = m.available !== false;  // students are listed only when they work
      o.textContent = available ? m.name : `${m.name} (unavailable)`;
      o.disabled = !available;
      if (!available) o.title = m.reason || "";
      group.appendChild(o);
    }
    if (group.children.length) select.appendChild(group);
  }
  select.disabled = false;
  const lim = catalog.limits;
  const names = { PNG: "PNG", JPEG: "JPEG", WEBP: "WebP" };
  const formats = lim.formats.map((f) => names[f] || f).join(", ");
  $("limits").textContent = `${formats}; up to ${(lim.max_upload_bytes / 1e6).toFixed(0)} MB and ` +
    `${(lim.max_pixels / 1e6).toFixed(0)} megapixels; output up to ${lim.max_size} px`;
  renderOptions();
  setBusy(false);
}

function formFields(choice) {
  const fields = new FormData();
  const photo = $("image").files[0];
  if (!photo) throw new Error("choose a photo first");
  const lim = catalog.limits;
  let bytes = photo.size;
  fields.append("image", photo, photo.name);
  fields.append(choice.kind === "student" ? "model" : "method", choice.name);
  if (styleOf(choice) === "named") {
    namedStyles(choice, fields);
  } else {
    const most = maxStyles(choice);
    const styles = most > 0 ? Array.from($("style").files) : [];  // a baked style takes none
    if (most > 0 && !styles.length) {
      throw new Error(`choose a style image: ${choice.name} copies the look of the image you give it`);
    }
    if (styles.length > most) {
      throw new Error(most === 1 ? `${choice.name} takes one style image` : `at most ${most} style images`);
    }
    for (const s of styles) {
      fields.append("style", s, s.name);
      bytes += s.size;
    }
  }
  if (bytes > lim.max_upload_bytes) {
    throw new Error(`the images add up to ${(bytes / 1e6).toFixed(1)} MB; this service accepts at most ` +
      `${(lim.max_upload_bytes / 1e6).toFixed(0)} MB per request`);
  }
  for (const input of document.querySelectorAll("#options [name], #advanced-options [name]")) {
    if (input.value.trim() !== "") fields.append(input.name, input.value.trim());
  }
  return fields;
}

function namedStyles(choice, fields) {
  // A style set's ticked styles, one style field each, and their weights when they blend.
  const picked = Array.from(document.querySelectorAll("#styles-list .style-pick")).filter((b) => b.checked);
  if (!picked.length) throw new Error(`choose a style: tick one of ${choice.name}'s styles (several blend them)`);
  for (const b of picked) fields.append("style", b.value);
  if (picked.length > 1) {
    const weights = picked.map((b) => $(b.dataset.weight).value.trim());
    if (weights.some((w) => w === "" || !(Number(w) >= 0))) {
      throw new Error("give each ticked style a weight of 0 or more");
    }
    fields.append("style_weights", weights.join(","));
  }
}

function showResult(src, info, fileName) {
  // No width/height attributes: the picture shows at its own size (CSS only shrinks it to fit a narrow window).
  $("result").src = src;
  $("download").href = src;
  $("download").download = fileName;
  $("result-info").textContent = info;
  $("output").hidden = false;
}

function keepResult(blob) {
  // One result at a time: the previous picture's blob: URL is released when the next one replaces it.
  if (resultUrl) URL.revokeObjectURL(resultUrl);
  resultUrl = URL.createObjectURL(blob);
  return resultUrl;
}

function stem(file) {
  return (file ? file.name.replace(/\.[^.]*$/, "") : "photo") || "photo";
}

async function runOnePass(choice, fields) {
  // A student or a one-pass method: one request, whose answer is the picture.
  $("progress-row").hidden = false;
  $("progress").removeAttribute("value");  // indeterminate: one pass has no steps to report
  $("status").textContent = `stylising with ${choice.name}…`;
  const t0 = performance.now();
  const response = await fetch("/v1/stylize", { method: "POST", body: fields, headers: WRITE_HEADERS });
  if (!response.ok) throw new Error(await errorOf(response));
  const blob = await response.blob();
  const bitmap = await createImageBitmap(blob);
  const url = keepResult(blob);
  const seconds = ((performance.now() - t0) / 1000).toFixed(2);
  $("progress").value = 1;
  $("status").textContent = `done in ${seconds} s`;
  const named = styleOf(choice) === "named" ? ` (${fields.getAll("style").join(" + ")})` : "";
  showResult(url, `${bitmap.width}×${bitmap.height}, ${choice.name}${named}`,
    `${stem($("image").files[0])}-${choice.name}.png`);
  bitmap.close();
}

function describeProgress(job) {
  const p = job.progress;
  if (job.state === "queued") return "waiting for a worker…";
  if (!p) return "starting…";
  const loss = p.loss === null ? "" : `, loss ${p.loss.toPrecision(4)}`;
  return `${job.state}: scale ${p.scale + 1}/${p.scales}, step ${p.step}/${p.total}${loss}, ${p.elapsed.toFixed(1)} s`;
}

async function runJob(choice, fields) {
  $("progress-row").hidden = false;
  $("progress").value = 0;
  $("status").textContent = "sending…";
  const response = await fetch("/v1/jobs", { method: "POST", body: fields, headers: WRITE_HEADERS });
  if (!response.ok) throw new Error(await errorOf(response));
  const created = await response.json();
  jobTokens.set(created.id, created.token);
  for (;;) {
    const poll = await fetch(created.url, { cache: "no-store", headers: jobHeaders(created.id) });
    if (!poll.ok) throw new Error(await errorOf(poll));
    const job = await poll.json();
    if (job.progress) $("progress").value = job.progress.fraction;
    if (job.state === "failed") throw new Error(job.error || "the job failed");
    if (job.state === "done") {
      $("progress").value = 1;
      const r = job.result;
      const picture = await fetch(job.result_url, { cache: "no-store", headers: jobHeaders(created.id) });
      if (!picture.ok) throw new Error(await errorOf(picture));
      const url = keepResult(await picture.blob());
      const seconds = r.metadata && r.metadata.seconds !== undefined ? `${r.metadata.seconds} s` : "";
      $("status").textContent = `done${seconds ? ` in ${seconds}` : ""}`;
      showResult(url, `${r.width}×${r.height}, ${choice.name}`,
        `${stem($("image").files[0])}-${choice.name}.png`);
      return;
    }
    $("status").textContent = describeProgress(job);
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

async function submit(event) {
  event.preventDefault();
  if (busy || !catalog) return;
  showError("");
  const choice = selected();
  if (!choice) {
    showError("choose a model");
    return;
  }
  let fields;
  try {
    fields = formFields(choice);
  } catch (err) {
    showError(err.message);
    return;
  }
  setBusy(true);
  $("output").hidden = true;  // an earlier result must not pass for this one
  try {
    if (choice.kind === "engine") await runJob(choice, fields);
    else await runOnePass(choice, fields);
  } catch (err) {
    $("progress-row").hidden = true;
    showError(err instanceof TypeError ? `cannot reach the service (${err.message})` : err.message);
  } finally {
    setBusy(false);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", submit);
  $("model").addEventListener("change", renderOptions);
  loadModels();
});
