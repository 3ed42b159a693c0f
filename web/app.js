// The run's exported .tflite in MediaPipe Tasks Vision for the web (WASM, CPU delegate).
//
// `make app` copies this file into RUN/app/ beside app.json (which models are here, and the
// model card from RUN/export/model_card.json), models/, golden/ and vendor/ (MediaPipe's
// bundle and WASM, from web/node_modules: nothing is loaded from a CDN).
//
// What the page decides from the .tflite itself: its task (task.json) and labels (labels.txt),
// both in the zip of associated files that export.metadata appends to the model. ImageClassifier
// or ObjectDetector then read the rest (normalisation, labels, output tensors) from the same
// metadata, as an Android or iOS app's MediaPipe Tasks would.
//
// ?model=model_float32.tflite picks a model; ?selftest=1 runs golden/ through the runtime and
// writes a JSON verdict into #selftest (README, "Web app").
import {FilesetResolver, ImageClassifier, ObjectDetector} from "./vendor/tasks-vision/vision_bundle.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const TOP_K = 5;

// The status line's class says where the page is: "busy", "ready" or "error" (tests wait on it).
function setStatus(text, isError = false, state = null) {
  $("status").textContent = text;
  $("status").className = `status ${isError ? "error" : state || "ready"}`;
}

async function fetchOk(url) {
  const response = await fetch(url, {cache: "no-store"});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}
const fetchJson = async (url) => (await fetchOk(url)).json();
const fetchBytes = async (url) => new Uint8Array(await (await fetchOk(url)).arrayBuffer());

// ---- the model's own metadata: a zip (stored entries) appended to the flatbuffer ----------------

function zipEntries(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--) {
    if (view.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
  }
  if (eocd < 0) return new Map();
  const count = view.getUint16(eocd + 10, true);
  const cdSize = view.getUint32(eocd + 12, true);
  const cdOffset = view.getUint32(eocd + 16, true);
  // Offsets may count from the start of the zip or of the file: measure which from where the
  // central directory really is.
  const shift = eocd - cdSize - cdOffset;
  const files = new Map();
  let p = eocd - cdSize;
  const decoder = new TextDecoder();
  for (let n = 0; n < count; n++) {
    if (view.getUint32(p, true) !== 0x02014b50) break;
    const method = view.getUint16(p + 10, true);
    const size = view.getUint32(p + 20, true);
    const nameLen = view.getUint16(p + 28, true), extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    const local = view.getUint32(p + 42, true) + shift;
    const name = decoder.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    if (method === 0 && view.getUint32(local, true) === 0x04034b50) {
      const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
      files.set(name, bytes.subarray(start, start + size));
    }
    p += 46 + nameLen + extraLen + commentLen;
  }
  return files;
}

function embeddedMetadata(bytes, name) {
  const files = zipEntries(bytes);
  const text = (file) => (files.has(file) ? new TextDecoder().decode(files.get(file)) : null);
  const taskJson = text("task.json");
  const labels = (text("labels.txt") || "").split("\n").map((s) => s.trim()).filter(Boolean);
  if (!taskJson) {
    throw new Error(`${name}: no task.json in the model's metadata; export it again with make export`);
  }
  return {task: JSON.parse(taskJson).task, labels};
}

// ---- running a task, and what both tasks return ------------------------------------------------

async function createTask(fileset, task, bytes, runningMode) {
  // A copy per task: MediaPipe takes the buffer over.
  const baseOptions = {modelAssetBuffer: bytes.slice(), delegate: "CPU"};
  if (task === "classify") {
    return ImageClassifier.createFromOptions(fileset, {baseOptions, runningMode, maxResults: TOP_K});
  }
  if (task === "detect") {
    return ObjectDetector.createFromOptions(fileset, {baseOptions, runningMode, scoreThreshold: 0, maxResults: -1});
  }
  throw new Error(`unknown task ${JSON.stringify(task)} in the model's task.json`);
}

function sourceSize(source) {
  if (source instanceof HTMLVideoElement) return [source.videoWidth, source.videoHeight];
  if (source instanceof HTMLImageElement) return [source.naturalWidth, source.naturalHeight];
  return [source.width, source.height];
}

// -> {ms, result}: result is {top_k: [{index, label, score}]} or {detections: [{index, label,
// score, box: [ymin, xmin, ymax, xmax] normalized, pixel_box: [originX, originY, width, height]
// as MediaPipe reports it (whole pixels)}]}, the shapes of export/golden.py.
function runTask(runner, task, source, labels, timestamp = null) {
  const start = performance.now();
  let raw;
  if (task === "classify") {
    raw = timestamp === null ? runner.classify(source) : runner.classifyForVideo(source, timestamp);
  } else {
    raw = timestamp === null ? runner.detect(source) : runner.detectForVideo(source, timestamp);
  }
  const ms = performance.now() - start;
  if (task === "classify") {
    const categories = raw.classifications.length ? raw.classifications[0].categories : [];
    return {ms, result: {top_k: categories.map((c) => ({index: c.index, label: c.categoryName, score: c.score}))}};
  }
  const [w, h] = sourceSize(source);
  const detections = raw.detections.map((d) => {
    const b = d.boundingBox, c = d.categories[0];
    // ObjectDetector names the class but leaves its index at -1: take it from the labels.
    return {index: c.index >= 0 ? c.index : labels.indexOf(c.categoryName), label: c.categoryName, score: c.score,
            box: [b.originY / h, b.originX / w, (b.originY + b.height) / h, (b.originX + b.width) / w],
            pixel_box: [b.originX, b.originY, b.width, b.height]};
  });
  detections.sort((a, b) => b.score - a.score);
  return {ms, result: {detections}};
}

// ---- agreement with golden.json (the rule export/golden.py states) -----------------------------

function boxIou(a, b) {
  const inter = Math.max(0, Math.min(a[2], b[2]) - Math.max(a[0], b[0])) *
                Math.max(0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0;
}

// MediaPipe reports whole-pixel boxes (BoundingBox), so they are compared with golden.json's
// pixel_box: the same truncation of the same float box, not a wider tolerance.
const corners = (b) => [b[1], b[0], b[1] + b[3], b[0] + b[2]];

function agrees(task, expected, got, golden) {
  if (task === "classify") {
    return expected.top_k.length > 0 && got.top_k.length > 0 && expected.top_k[0].label === got.top_k[0].label;
  }
  const covered = (shown, others) => shown.filter((d) => d.score >= golden.show_threshold).every(
    (d) => others.some((o) => o.label === d.label &&
                              boxIou(corners(d.pixel_box), corners(o.pixel_box)) >= golden.box_iou));
  return covered(expected.detections, got.detections) && covered(got.detections, expected.detections);
}

// ---- drawing -------------------------------------------------------------------------------------

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324"];

function draw(source, task, result, threshold) {
  const canvas = $("view");
  const [w, h] = sourceSize(source);
  const scale = Math.max(1, Math.floor(320 / Math.max(w, h)));
  canvas.width = w * scale;
  canvas.height = h * scale;
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = false;
  if (source instanceof ImageData) {
    const tmp = document.createElement("canvas");
    tmp.width = w; tmp.height = h;
    tmp.getContext("2d").putImageData(source, 0, 0);
    ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
  } else {
    ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  }
  if (task !== "detect") return;
  ctx.lineWidth = 2;
  ctx.font = "bold 13px system-ui, sans-serif";
  for (const d of result.detections.filter((x) => x.score >= threshold)) {
    const [y0, x0, y1, x1] = d.box.map((v, i) => v * (i % 2 ? canvas.width : canvas.height));
    const color = COLORS[d.index % COLORS.length];
    ctx.strokeStyle = color;
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    ctx.fillStyle = color;
    ctx.fillRect(x0, Math.max(0, y0 - 16), ctx.measureText(text).width + 6, 16);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x0 + 3, Math.max(12, y0 - 4));
  }
}

function showTable(task, result, threshold) {
  const head = $("result-head"), body = $("result-body");
  body.textContent = "";
  const row = (cells, tag = "td") => {
    const tr = document.createElement("tr");
    for (const [text, cls] of cells) {
      const cell = document.createElement(tag);
      cell.textContent = text;
      if (cls) cell.className = cls;
      tr.appendChild(cell);
    }
    return tr;
  };
  if (task === "classify") {
    head.replaceChildren(row([["Label"], ["Probability", "num"]], "th"));
    for (const c of result.top_k) body.appendChild(row([[c.label], [c.score.toFixed(4), "num"]]));
    return;
  }
  head.replaceChildren(row([["Label"], ["Score", "num"], ["ymin", "num"], ["xmin", "num"], ["ymax", "num"],
                            ["xmax", "num"]], "th"));
  const shown = result.detections.filter((d) => d.score >= threshold);
  for (const d of shown) {
    body.appendChild(row([[d.label], [d.score.toFixed(3), "num"], ...d.box.map((v) => [v.toFixed(3), "num"])]));
  }
  if (!shown.length) body.appendChild(row([[`(no detections with score >= ${threshold})`]]));
}

function showCard(app, entry, meta) {
  const q = entry.input.quantization;
  const items = [
    ["Model", `${entry.name} (${entry.mode})`],
    ["Task", meta.task === "classify" ? "image classifier (MediaPipe ImageClassifier)"
                                     : "object detector (MediaPipe ObjectDetector)"],
    ["Input", `${app.input.size} x ${app.input.size} ${app.input.color_order}, ${entry.input.dtype}` +
              (q ? ` (scale ${q.scale}, zero point ${q.zero_point})` : " 0..255")],
    ["Quantization", entry.mode],
    ["Size", `${(entry.size_bytes / 1024).toFixed(1)} KiB`],
    ...(entry.app_score != null ? [[`Test ${app.quality} in MediaPipe (Python)`, entry.app_score.toFixed(4)]] : []),
    [`Test ${app.quality} (LiteRT, Python)`, entry.score.toFixed(4)],
    ["Labels", meta.labels.join(", ")],
    ["Data", app.data],
    ["Runtime", `@mediapipe/tasks-vision ${app.runtime.version}, WASM, CPU delegate`],
  ];
  $("card").replaceChildren(...items.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v;
    return [dt, dd];
  }));
  if (app.rejected.length) {
    $("rejected").hidden = false;
    $("rejected").textContent = "Not in this page: " +
      app.rejected.map((r) => `${r.name}: ${r.reason}`).join("; ");
  }
}

// ---- self-test -----------------------------------------------------------------------------------

async function pngPixels(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d", {willReadFrequently: true});
  ctx.drawImage(img, 0, 0);
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

function rgbToImageData(raw, width, height) {
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0, j = 0; i < raw.length; i += 3, j += 4) {
    rgba[j] = raw[i]; rgba[j + 1] = raw[i + 1]; rgba[j + 2] = raw[i + 2]; rgba[j + 3] = 255;
  }
  return new ImageData(rgba, width, height);
}

function samePixels(a, b) {
  if (a.width !== b.width || a.height !== b.height) return false;
  for (let i = 0; i < a.data.length; i++) if (a.data[i] !== b.data[i]) return false;
  return true;
}

async function selfTest(state) {
  const {app, entry, meta, fileset} = state;
  const runtime = `MediaPipe Tasks Vision ${app.runtime.version} (web, WASM, CPU delegate); ${navigator.userAgent}`;
  const golden = await fetchJson("golden/golden.json");
  const expected = golden.models[entry.name];
  if (!expected) throw new Error(`golden/golden.json has no outputs for ${entry.name}; run make export, then make app`);
  const runner = await createTask(fileset, meta.task, state.bytes, "IMAGE");
  const {width, height} = golden.input;
  const images = [];
  let last = null;
  for (const [i, image] of golden.images.entries()) {
    const raw = await fetchBytes(`golden/${image.rgb}`);
    if (raw.length !== width * height * 3) {
      throw new Error(`golden/${image.rgb}: ${raw.length} bytes, expected ${width * height * 3}`);
    }
    const pixels = rgbToImageData(raw, width, height);
    const pngMatches = samePixels(await pngPixels(`golden/${image.png}`), pixels);
    const {ms, result} = runTask(runner, meta.task, pixels, meta.labels);
    const agree = agrees(meta.task, expected[i], result, golden);
    images.push({name: image.name, agree, png_matches_pixels: pngMatches, ms: Number(ms.toFixed(2)),
                 expected: expected[i], got: result});
    last = {pixels, result, ms};
  }
  runner.close();
  const verdict = {passed: images.length > 0 && images.every((x) => x.agree && x.png_matches_pixels),
                   runtime, model: entry.name, task: meta.task, python_runtime: golden.runtime,
                   show_threshold: golden.show_threshold, box_iou: golden.box_iou, images};
  if (last) {
    draw(last.pixels, meta.task, last.result, golden.show_threshold);
    showTable(meta.task, last.result, golden.show_threshold);
    $("latency").textContent = `${last.ms.toFixed(1)} ms / frame`;
  }
  return verdict;
}

function writeVerdict(verdict) {
  $("selftest-panel").hidden = false;
  $("selftest").textContent = JSON.stringify(verdict);
  const describe = (r) => (r.top_k ? (r.top_k.length ? `${r.top_k[0].label} ${r.top_k[0].score.toFixed(4)}` : "-")
    : r.detections.filter((d) => d.score >= (verdict.show_threshold ?? 0.4))
        .map((d) => `${d.label} ${d.score.toFixed(2)}`).join(", ") || "(none shown)");
  const rows = [["Image", "Python (LiteRT)", "Browser (MediaPipe)", "ms", "Agree"]].concat(
    (verdict.images || []).map((x) => [x.name, describe(x.expected), describe(x.got), x.ms.toFixed(1),
                                       x.agree && x.png_matches_pixels ? "yes" : "NO"]));
  $("selftest-table").replaceChildren(...rows.map((cells, i) => {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const cell = document.createElement(i === 0 ? "th" : "td");
      cell.textContent = text;
      tr.appendChild(cell);
    }
    return tr;
  }));
  const agreeing = (verdict.images || []).filter((x) => x.agree).length;
  const summary = $("selftest-summary");
  summary.className = verdict.passed ? "pass" : "fail";
  summary.textContent = verdict.error ? `FAILED: ${verdict.error}`
    : `${verdict.passed ? "PASSED" : "FAILED"}: ${agreeing} of ${verdict.images.length} golden images agree ` +
      `with ${verdict.python_runtime} (${verdict.model})`;
}

// ---- the page --------------------------------------------------------------------------------------

async function loadModel(state, entry) {
  state.entry = entry;
  state.bytes = await fetchBytes(entry.file);
  state.meta = embeddedMetadata(state.bytes, entry.name);
  state.runner?.close();
  state.warm = false;
  try {
    state.runner = await createTask(state.fileset, state.meta.task, state.bytes, "IMAGE");
  } catch (e) {
    const first = String(e.message || e).split("\n")[0];
    const hint = /got INT8/i.test(first)
      ? " MediaPipe's web runtime takes uint8 or float32 image inputs: export with INT8_IO=uint8 (the default)."
      : "";
    throw new Error(`${entry.name}: MediaPipe refused the model (${first}).${hint}`);
  }
  state.videoRunner?.close();
  state.videoRunner = null;
  showCard(state.app, entry, state.meta);
}

function classifySource(state, source) {
  const {ms, result} = runTask(state.runner, state.meta.task, source, state.meta.labels);
  draw(source, state.meta.task, result, state.app.show_threshold);
  showTable(state.meta.task, result, state.app.show_threshold);
  const first = !state.warm;
  state.warm = true;
  $("latency").textContent = `${ms.toFixed(1)} ms / frame` + (first ? " (the first includes start-up)" : "");
}

async function showImageFile(state, file) {
  stopCamera(state);
  const img = new Image();
  img.src = URL.createObjectURL(file);
  await img.decode();
  classifySource(state, img);
  setStatus(`${file.name}: ${img.naturalWidth} x ${img.naturalHeight}, resized by MediaPipe to the model's input`);
}

function stopCamera(state) {
  if (!state.stream) return;
  for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
  $("camera-button").textContent = "Start camera";
}

async function startCamera(state) {
  const note = $("camera-note");
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    note.hidden = false;
    note.textContent = "The camera needs a secure page: open it as http://localhost or http://127.0.0.1 on " +
      "this computer, or over HTTPS from a phone (README, \"Web app\"). Dropping an image works everywhere.";
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}, audio: false});
  } catch (e) {
    note.hidden = false;
    note.textContent = `The browser did not give the camera: ${e.message}`;
    return;
  }
  const video = $("video");
  video.srcObject = state.stream;
  await video.play();
  $("camera-button").textContent = "Stop camera";
  state.videoRunner = state.videoRunner ||
    await createTask(state.fileset, state.meta.task, state.bytes, "VIDEO");
  let lastTime = -1, average = null;
  const frame = () => {
    if (!state.stream) return;
    if (video.currentTime !== lastTime && video.videoWidth) {
      lastTime = video.currentTime;
      const {ms, result} = runTask(state.videoRunner, state.meta.task, video, state.meta.labels, performance.now());
      average = average === null ? ms : 0.9 * average + 0.1 * ms;
      draw(video, state.meta.task, result, state.app.show_threshold);
      showTable(state.meta.task, result, state.app.show_threshold);
      $("latency").textContent = `${ms.toFixed(1)} ms / frame (average ${average.toFixed(1)} ms)`;
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}

async function main() {
  const selftest = params.get("selftest") === "1";
  let state = null;
  try {
    const app = await fetchJson("app.json");
    document.title = `${app.title}: MediaPipe Tasks for the web`;
    $("title").textContent = app.title;
    const wanted = params.get("model");
    const rejected = app.rejected.find((r) => r.name === wanted);
    if (rejected) throw new Error(`${rejected.name}: ${rejected.reason}`);
    const entry = wanted ? app.models.find((m) => m.name === wanted) : app.models[0];
    if (!entry) throw new Error(`${wanted}: not a model of this page (${app.models.map((m) => m.name).join(", ")})`);
    const select = $("model-select");
    select.replaceChildren(...app.models.map((m) => new Option(m.name, m.name, false, m === entry)));
    const fileset = await FilesetResolver.forVisionTasks("./vendor/tasks-vision/wasm");
    state = {app, fileset, stream: null, runner: null, videoRunner: null};
    await loadModel(state, entry);

    if (selftest) {
      setStatus(`Self-test of ${entry.name}...`, false, "busy");
      const verdict = await selfTest(state);
      writeVerdict(verdict);
      setStatus(`Self-test of ${entry.name}: ${verdict.passed ? "passed" : "FAILED"}`, !verdict.passed);
    } else {
      const sample = app.sample;
      if (sample) {
        const img = new Image();
        img.src = sample;
        await img.decode();
        classifySource(state, img);
      }
      setStatus(`Ready: ${entry.name}. Showing a test image; drop your own.`);
    }
  } catch (e) {
    console.error(e);
    setStatus(`Error: ${e.message}`, true);
    if (selftest) writeVerdict({passed: false, runtime: "MediaPipe Tasks Vision (web)", error: e.message, images: []});
    return;
  }

  $("model-select").addEventListener("change", async (event) => {
    const entry = state.app.models.find((m) => m.name === event.target.value);
    stopCamera(state);
    try {
      await loadModel(state, entry);
      setStatus(`Ready: ${entry.name}.`);
    } catch (e) {
      setStatus(`Error: ${e.message}`, true);
    }
  });
  $("file-input").addEventListener("change", (event) => {
    if (event.target.files.length) showImageFile(state, event.target.files[0]).catch((e) => setStatus(e.message, true));
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    const file = [...event.dataTransfer.files].find((f) => f.type.startsWith("image/"));
    if (file) showImageFile(state, file).catch((e) => setStatus(e.message, true));
    else setStatus("Drop an image file (PNG, JPEG, ...)", true);
  });
  $("camera-button").addEventListener("click", () => {
    if (state.stream) stopCamera(state);
    else startCamera(state).catch((e) => setStatus(e.message, true));
  });
}

main();
