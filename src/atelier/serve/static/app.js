// atelier's page: builds its form from GET /v1/models and sends each method by its kind: a student (POST
// /v1/stylize with model=, one pass, its style baked in), a one-pass method (POST /v1/stylize with method= and the
// style image(s) it takes, one pass) or an engine job (POST /v1/jobs, then polls GET /v1/jobs/{id}); it shows the
// result with a download link. The options shown for a method are the ones /v1/models lists for it.
// Every error the service answers is {"error": "..."}; the page shows that message as it is.
// Writes carry X-Atelier-Request: 1 (the service refuses writes without it: another site's form cannot send it).
// A job is readable only with the token POST /v1/jobs gave: the page keeps it in memory (never in a URL or in
// storage) and sends it as Authorization: Bearer; the result is fetched with it and shown as a blob: URL, since an
// <img src> cannot send headers.
"use strict";

// Options shown at once; a method's other options go under "More options".
const MAIN_OPTIONS = {
  student: ["size", "tile"],
  "one-pass": ["size", "strength", "style_scale"],
  engine: ["size", "iterations", "style_weight", "preserve_color", "seed"],
};
const GROUPS = [  // [kind, the /v1/models list, the menu's heading]
  ["student", "students", "Students (one pass, fast, their own style)"],
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

function maxStyles(choice) {
  // How many style images the choice takes: none for a student, its own most for a one-pass method.
  if (choice.kind === "student") return 0;
  const e = entryOf(choice);
  return choice.kind === "one-pass" ? (e ? e.max_styles : 1) : catalog.limits.max_styles;
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

function renderOptions() {
  const choice = selected();
  const main = $("options");
  const more = $("advanced-options");
  main.replaceChildren();
  more.replaceChildren();
  $("style-row").hidden = true;
  $("advanced").hidden = true;
  if (!choice || !catalog) return;
  const e = entryOf(choice);
  let options;
  if (choice.kind === "student") {
    $("model-help").textContent = e ? e.description : "";
    options = catalog.student_options;
  } else {
    const how = choice.kind === "engine" ? "runs as a job, with its progress shown below"
      : "one pass, in the style of the image you give it";
    $("model-help").textContent = e ? `${e.description}; ${how}` : "";
    options = e ? e.options : [];
    const most = maxStyles(choice);
    $("style").multiple = most > 1;
    $("style-label").textContent = most > 1 ? `Style images (up to ${most})` : "Style image";
    $("style-row").hidden = most === 0;
  }
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
  if (choice.kind === "student") {
    fields.append("model", choice.name);
  } else {
    fields.append("method", choice.name);
    const most = maxStyles(choice);
    const styles = most > 0 ? Array.from($("style").files) : [];  // a method with its style baked in takes none
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
  showResult(url, `${bitmap.width}×${bitmap.height}, ${choice.name}`,
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
