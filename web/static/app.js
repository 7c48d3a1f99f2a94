// fergpu's page: opens WebGPU (or the CPU backend), then runs the Camera, Photos and Train
// sections on it. Everything happens here, in the browser; nothing is sent anywhere.
import init, { openEngine, CsvLoader, Data } from "./pkg/fergpu_web.js";
import { drawCurves, confusionTable, bars } from "./charts.js";

export const EMOTIONS = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"];
const $ = (id) => document.getElementById(id);

// What the tests (web/tests/) and the console can reach.
const app = { engine: null, classifier: null, training: null, data: null, camera: {} };
window.fergpuApp = app;

function fail(e) {
  console.error(e);
  const el = $("error");
  el.textContent = String(e && e.message ? e.message : e);
  el.hidden = false;
}

function showTab(name) {
  for (const b of document.querySelectorAll("nav .tab")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === name);
  if (name !== "camera") stopCamera();
  history.replaceState(null, "", "#" + name);
}

// ---- the model for Camera and Photos ---------------------------------------------------

function useModel(bytes, name) {
  app.classifier = app.engine.loadModel(bytes, name);
  $("model-name").textContent = `Model: ${app.classifier.describe()} from ${name}`;
}

async function loadShippedModel() {
  try {
    const r = await fetch("model.safetensors");
    if (!r.ok) return;
    useModel(new Uint8Array(await r.arrayBuffer()), "model.safetensors");
  } catch (e) {
    // No shipped model: the person loads one (or trains one).
  }
}

function needModel() {
  if (!app.classifier) throw new Error("Load a checkpoint first (the button at the top), or train one in Train.");
  return app.classifier;
}

// ---- Camera ----------------------------------------------------------------------------

let cameraOn = false;

async function startCamera() {
  try {
    needModel();
    const video = $("camera-video");
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
    video.srcObject = stream;
    await video.play();
    cameraOn = true;
    $("camera-start").disabled = true;
    $("camera-stop").disabled = false;
    app.camera = { frames: 0, ms: 0, faces: 0, lastFaces: [] };
    cameraLoop();
  } catch (e) {
    fail(e);
  }
}

function stopCamera() {
  cameraOn = false;
  const video = $("camera-video");
  if (video.srcObject) {
    for (const t of video.srcObject.getTracks()) t.stop();
    video.srcObject = null;
  }
  $("camera-start").disabled = false;
  $("camera-stop").disabled = true;
}

async function cameraLoop() {
  const video = $("camera-video");
  const canvas = $("camera-canvas");
  const ctx = canvas.getContext("2d");
  // The frame is grabbed off-screen and shown with its boxes once it is classified.
  const grab = document.createElement("canvas");
  const gctx = grab.getContext("2d", { willReadFrequently: true });
  let shown = performance.now();
  let framesShown = 0;
  while (cameraOn) {
    const w = video.videoWidth, h = video.videoHeight;
    if (!w || !h) { await new Promise((r) => setTimeout(r, 30)); continue; }
    for (const c of [canvas, grab]) if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    gctx.drawImage(video, 0, 0, w, h);
    const t0 = performance.now();
    const pixels = gctx.getImageData(0, 0, w, h).data;
    const faces = JSON.parse(await app.classifier.predictFrame(new Uint8Array(pixels.buffer), w, h));
    const ms = performance.now() - t0;
    app.camera.frames++;
    app.camera.ms += ms;
    app.camera.faces += faces.length;
    app.camera.lastFaces = faces;
    ctx.drawImage(grab, 0, 0);
    drawFaces(ctx, faces);
    bars($("camera-bars"), faces.length ? faces[0].probs : null, EMOTIONS);
    framesShown++;
    const now = performance.now();
    if (now - shown > 1000) {
      const fps = (framesShown * 1000) / (now - shown);
      $("camera-fps").textContent = `${fps.toFixed(1)} frames/s, ${(app.camera.ms / app.camera.frames).toFixed(0)} ms per frame (faces + model) on ${app.engine.deviceName()}`;
      shown = now;
      framesShown = 0;
    }
    await new Promise((r) => requestAnimationFrame(r));
  }
}

function drawFaces(ctx, faces) {
  ctx.lineWidth = 3;
  ctx.font = "bold 18px sans-serif";
  for (const f of faces) {
    ctx.strokeStyle = "#ff8c1a";
    ctx.strokeRect(f.x, f.y, f.width, f.height);
    const label = `${EMOTIONS[f.top]} ${(100 * f.probs[f.top]).toFixed(0)}%`;
    const tw = ctx.measureText(label).width + 8;
    ctx.fillStyle = "#ff8c1a";
    ctx.fillRect(f.x, Math.max(0, f.y - 24), tw, 24);
    ctx.fillStyle = "#000";
    ctx.fillText(label, f.x + 4, Math.max(18, f.y - 6));
  }
}

// ---- Photos ----------------------------------------------------------------------------

async function predictPhotos(files) {
  try {
    const classifier = needModel();
    const whole = $("photo-whole").checked;
    for (const file of files) {
      const bytes = new Uint8Array(await file.arrayBuffer());
      const div = document.createElement("div");
      div.className = "photo";
      $("photo-results").prepend(div);
      try {
        const pred = JSON.parse(await classifier.predictPhoto(bytes, file.name, whole));
        await showPhoto(div, file, pred);
      } catch (e) {
        div.textContent = `${file.name}: ${e.message || e}`;
      }
    }
  } catch (e) {
    fail(e);
  }
}

// Box colour of each emotion, as `fergpu predict --annotate` draws them.
const COLOURS = ["#e62828", "#78aa1e", "#a050dc", "#ffc800", "#286ef0", "#00c8c8", "#c8c8c8"];

/// The photo with each face's detector box (thick), the square given to the model (thin)
/// and a label (number, top emotion, probability), as `fergpu predict --annotate` draws it.
async function annotated(file, pred) {
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const canvas = document.createElement("canvas");
  canvas.width = pred.width;
  canvas.height = pred.height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const short = Math.min(pred.width, pred.height);
  (pred.faces || []).forEach((f, i) => {
    const top = EMOTIONS.indexOf(f.emotion);
    ctx.strokeStyle = ctx.fillStyle = COLOURS[top];
    ctx.lineWidth = 1;
    ctx.strokeRect(f.crop.x, f.crop.y, f.crop.side, f.crop.side);
    if (f.score !== null) {
      ctx.lineWidth = Math.max(2, Math.floor(short / 250));
      ctx.strokeRect(f.box.x, f.box.y, f.box.width, f.box.height);
    }
    const label = `${i + 1} ${f.emotion} ${(100 * f.probabilities[f.emotion]).toFixed(0)}%`;
    const px = Math.max(11, Math.min(f.crop.side * 0.25, Math.max(11, short / 25)));
    ctx.font = `${px}px sans-serif`;
    const w = ctx.measureText(label).width + 6, h = px + 4;
    const y = f.crop.y - h >= 0 ? f.crop.y - h : Math.max(0, f.crop.y);
    const x = Math.max(0, Math.min(f.crop.x, pred.width - w));
    ctx.fillRect(x, y, w, h);
    ctx.fillStyle = "#000";
    ctx.fillText(label, x + 3, y + px);
  });
  return canvas;
}

async function showPhoto(div, file, pred) {
  const canvas = await annotated(file, pred);
  const url = URL.createObjectURL(await new Promise((ok) => canvas.toBlob(ok, "image/png")));
  const img = document.createElement("img");
  img.src = url;
  img.alt = `${file.name}, annotated`;
  const side = document.createElement("div");
  const stem = file.name.replace(/\.[^.]*$/, "");
  const faces = pred.faces || [];
  side.innerHTML = `<strong>${escapeHtml(file.name)}</strong> ${pred.width}×${pred.height}, ` +
    `${faces.length} face${faces.length === 1 ? "" : "s"} (${pred.crop})<br>` +
    `<a download="${escapeHtml(stem)}-annotated.png" href="${url}">Save the annotated image</a>`;
  faces.forEach((f, i) => {
    const h = document.createElement("div");
    h.innerHTML = `<p>Face ${i + 1}: <strong>${f.emotion}</strong></p>`;
    const probs = EMOTIONS.map((e) => f.probabilities[e]);
    const b = document.createElement("div");
    bars(b, probs, EMOTIONS);
    h.append(b);
    side.append(h);
  });
  const json = document.createElement("details");
  json.innerHTML = "<summary>as <code>fergpu predict --json</code></summary>";
  const pre = document.createElement("pre");
  pre.className = "summary prediction-json";
  pre.textContent = JSON.stringify(pred);
  json.append(pre);
  side.append(json);
  div.append(img, side);
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// ---- Train -----------------------------------------------------------------------------

let recipe = null;
let trainingRunning = false;

async function loadCsv(file) {
  const progress = $("data-progress");
  progress.hidden = false;
  progress.value = 0;
  $("data-summary").textContent = `Reading ${file.name}…`;
  try {
    const loader = new CsvLoader(file.name, $("csv-skip").checked);
    const reader = file.stream().getReader();
    let read = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      loader.push(value);
      read += value.length;
      progress.value = read / file.size;
      $("data-summary").textContent = `Reading ${file.name}: ${loader.rows()} rows`;
    }
    setData(loader.finish(), file.name);
  } catch (e) {
    $("data-summary").textContent = "";
    fail(e);
  } finally {
    progress.hidden = true;
  }
}

function setData(data, source) {
  app.data = data;
  const s = JSON.parse(data.summary());
  let text = `${source}: ${s.rows} rows (` + s.per_split.map(([n, c]) => `${n} ${c}`).join(", ") + ")";
  if (s.bad_rows) text += `\n${s.bad_rows} bad rows skipped:\n` + s.first_bad_rows.join("\n");
  $("data-summary").textContent = text;
  $("train-start").disabled = false;
}

function settingsFields() {
  const fields = {
    model: $("set-model").value,
    epochs: Number($("set-epochs").value),
    batch_size: Number($("set-batch").value),
    lr: Number($("set-lr").value),
    seed: Number($("set-seed").value),
  };
  // A recipe's own values win over the page's defaults for the fields it sets.
  if (recipe) for (const k of recipe.keys) delete fields[k];
  return JSON.stringify(fields);
}

async function startTraining() {
  try {
    if (!app.data) throw new Error("Choose the data first.");
    app.training = app.engine.startTraining(app.data, recipe ? recipe.text : null, settingsFields());
    $("train-summary").textContent = app.training.summary();
    $("test-report").textContent = "";
    for (const id of ["train-test", "train-save", "train-onnx", "train-use"]) $(id).disabled = false;
    await runTraining();
  } catch (e) {
    fail(e);
  }
}

async function runTraining() {
  if (trainingRunning || !app.training) return;
  trainingRunning = true;
  $("train-stop").disabled = false;
  $("train-continue").disabled = true;
  $("train-start").disabled = true;
  let batches = 1;
  try {
    for (;;) {
      const t0 = performance.now();
      const p = JSON.parse(await app.training.advance(batches));
      const ms = performance.now() - t0;
      // About five updates a second, however fast the device is.
      batches = Math.max(1, Math.min(256, Math.round(batches * (ms < 100 ? 2 : ms > 400 ? 0.5 : 1))));
      showProgress(p);
      app.lastProgress = p;
      if (p.done || !trainingRunning) break;
    }
  } catch (e) {
    fail(e);
  } finally {
    trainingRunning = false;
    $("train-stop").disabled = true;
    $("train-start").disabled = false;
    const done = app.lastProgress && app.lastProgress.done;
    $("train-continue").disabled = done;
  }
}

function showProgress(p) {
  const total = p.epochs * p.batches;
  const now = Math.min(total, p.epoch * p.batches + p.batch);
  $("train-progress").value = total ? now / total : 1;
  const [loss, acc] = p.running;
  const last = p.history[p.history.length - 1];
  $("train-status").textContent = `epoch ${Math.min(p.epoch + 1, p.epochs)} of ${p.epochs}, batch ${p.batch} of ${p.batches}` +
    ` — running loss ${loss.toFixed(4)}, accuracy ${(100 * acc).toFixed(1)}%` +
    (last ? ` — last validation accuracy ${(100 * last.val_acc).toFixed(1)}%` : "") +
    ` — ${p.images_per_second.toFixed(1)} images/s` + (p.done ? " — done" : "");
  drawCurves($("curve-loss"), $("curve-acc"), p.history);
}

async function testTraining() {
  try {
    const r = JSON.parse(await app.training.test());
    const el = $("test-report");
    el.innerHTML = `<p>Test split: ${r.images} images, accuracy <strong>${(100 * r.accuracy).toFixed(2)}%</strong>, ` +
      `loss ${r.loss.toFixed(4)}, macro-F1 ${r.macro_f1.toFixed(3)}</p>`;
    el.append(confusionTable(r.confusion, EMOTIONS));
    app.lastTest = r;
  } catch (e) {
    fail(e);
  }
}

function download(bytes, name, type) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes], { type }));
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

async function saveCheckpoint() {
  try {
    download(await app.training.checkpoint(), `fergpu-${$("set-model").value}.safetensors`, "application/octet-stream");
  } catch (e) {
    fail(e);
  }
}

async function saveOnnx() {
  try {
    download(await app.training.onnx(), `fergpu-${$("set-model").value}.onnx`, "application/octet-stream");
  } catch (e) {
    fail(e);
  }
}

async function useTrained() {
  try {
    useModel(await app.training.checkpoint(), "the model trained here");
  } catch (e) {
    fail(e);
  }
}

async function readRecipe(file) {
  const text = await file.text();
  // The page's fields leave alone every setting the recipe names.
  const keys = [...text.matchAll(/^\s*([A-Za-z_]+)\s*=/gm)].map((m) => m[1]);
  recipe = { text, keys };
  $("recipe-name").textContent = `recipe: ${file.name} (${keys.join(", ")})`;
}

// ---- wiring ----------------------------------------------------------------------------

function dropZone(id, input, onFiles) {
  const zone = $(id);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    onFiles([...e.dataTransfer.files]);
  });
  $(input).addEventListener("change", (e) => onFiles([...e.target.files]));
}

async function main() {
  for (const b of document.querySelectorAll("nav .tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
  showTab((location.hash || "#camera").slice(1));
  await init();
  const wantCpu = new URLSearchParams(location.search).get("backend") === "cpu";
  app.engine = await openEngine(!wantCpu);
  const device = $("device");
  const reason = app.engine.fallbackReason();
  if (reason) {
    device.textContent = `No WebGPU here: ${reason}. Running on ${app.engine.deviceName()} (WebAssembly, one thread) — much slower than a GPU.`;
    device.classList.add("fallback");
  } else {
    device.textContent = `Running on ${app.engine.deviceName()} through WebGPU.`;
  }
  $("model-file").addEventListener("change", async (e) => {
    try {
      const f = e.target.files[0];
      if (f) useModel(new Uint8Array(await f.arrayBuffer()), f.name);
    } catch (err) {
      fail(err);
    }
  });
  $("camera-start").addEventListener("click", startCamera);
  $("camera-stop").addEventListener("click", stopCamera);
  dropZone("photo-drop", "photo-files", predictPhotos);
  dropZone("csv-drop", "csv-file", (files) => files[0] && loadCsv(files[0]));
  $("synth-go").addEventListener("click", () => {
    const n = Number($("synth-n").value);
    setData(Data.synthetic(n, 0x5eed), `${n} generated faces`);
  });
  $("recipe-file").addEventListener("change", (e) => e.target.files[0] && readRecipe(e.target.files[0]));
  $("train-start").addEventListener("click", startTraining);
  $("train-stop").addEventListener("click", () => { trainingRunning = false; });
  $("train-continue").addEventListener("click", runTraining);
  $("train-test").addEventListener("click", testTraining);
  $("train-save").addEventListener("click", saveCheckpoint);
  $("train-onnx").addEventListener("click", saveOnnx);
  $("train-use").addEventListener("click", useTrained);
  await loadShippedModel();
  app.ready = true;
  document.body.dataset.ready = "true";
}

main().catch(fail);
