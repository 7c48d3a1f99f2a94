// fergpu's web app in a real browser: Debian's Chromium, headless, with WebGPU on its
// bundled SwiftShader, driven by playwright-core against the built site served on
// 127.0.0.1. Run by .ci/run after `web/build.sh` (see web/tests/README.md):
//
//   FERGPU_SITE=web/dist FERGPU_BIN=target/debug/fergpu node --test web/tests/browser.test.mjs
//
// Every test here is about what a person sees or gets from the page, and about the
// browser's own compiler agreeing with fergpu's kernels. Screenshots of each section go to
// $FERGPU_SHOTS (default web/tests/screenshots).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../serve.mjs";
import { nativeFixtures, faceVideo } from "./fixtures.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const repo = resolve(here, "../..");
const site = resolve(process.env.FERGPU_SITE || join(repo, "web/dist"));
const shots = resolve(process.env.FERGPU_SHOTS || join(here, "screenshots"));
const chromiumPath = process.env.FERGPU_CHROMIUM || "/usr/bin/chromium";

// WebGPU on Chromium's bundled SwiftShader, headless, with nothing fetched from outside.
const FLAGS = [
  "--headless", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
  "--use-vulkan=swiftshader", "--use-webgpu-adapter=swiftshader",
  "--disable-background-networking", "--disable-component-update", "--no-first-run",
];

let server, base, fixtures, browser, page;

/// A headless Chromium on a new, empty profile folder, as a browser context.
async function launch(extraFlags = []) {
  const profile = mkdtempSync(join(tmpdir(), "fergpu-chromium-"));
  return chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: [...FLAGS, ...extraFlags],
    acceptDownloads: true,
    viewport: { width: 1280, height: 900 },
  });
}

async function openPage(context, hash = "") {
  const p = await context.newPage();
  // A Rust panic traps the module and leaves the page's promises pending forever: fail the
  // test that waits on one at once instead, with the panic's message.
  p.failure = new Promise((_, fail) => {
    p.on("console", (m) => {
      if (m.type() !== "error") return;
      console.error("page:", m.text());
      if (m.text().includes("fergpu panicked")) fail(new Error(m.text()));
    });
    p.on("pageerror", (e) => fail(new Error(`page error: ${e.message}`)));
  });
  // An error the page shows a person (a failed call into fergpu) fails the test as well.
  const shown = p.waitForSelector("#error:not([hidden])", { timeout: 0 }).then(async () => {
    throw new Error(`the page shows an error: ${await p.textContent("#error")}`);
  });
  p.failure = Promise.race([p.failure, shown]);
  p.failure.catch(() => {});
  await p.goto(`${base}/${hash}`);
  await p.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 120_000 });
  return p;
}

/// `page.evaluate(fn, arg)`, failing as soon as the page panics.
function run(p, fn, arg) {
  return Promise.race([p.evaluate(fn, arg), p.failure]);
}

before(async () => {
  assert.ok(existsSync(join(site, "index.html")), `no site in ${site}: run web/build.sh first`);
  mkdirSync(shots, { recursive: true });
  fixtures = nativeFixtures(repo);
  server = await serve(site, 0, { "/fixtures/": fixtures.dir, "/images/": join(repo, "tests/images") });
  base = `http://127.0.0.1:${server.address().port}`;
  browser = await launch();
  page = await openPage(browser);
});

after(async () => {
  await browser?.close();
  server?.close();
});

test("the page opens WebGPU on the browser's adapter", async () => {
  const info = await page.evaluate(() => ({
    backend: fergpuApp.engine.backend(),
    device: fergpuApp.engine.deviceName(),
    text: document.getElementById("device").textContent,
    privacy: document.querySelector(".privacy").textContent,
  }));
  assert.equal(info.backend, "webgpu", `fell back: ${info.text}`);
  assert.match(info.text, /through WebGPU/);
  assert.match(info.privacy, /never leave your machine/);
  console.log(`adapter: ${info.device}`);
});

test("the page opens with the shipped model, and a photo gets the answer fergpu predict gives without --checkpoint", async () => {
  // web/build.sh ships assets/model/fer2013-compact.safetensors by default. A page of its own:
  // the Photos test below loads another model into the shared one.
  const p = await openPage(browser);
  try {
    await Promise.race([p.failure, p.waitForFunction(() => fergpuApp.classifier, null, { timeout: 60_000 })]);
    assert.match(await p.textContent("#model-name"), /Model: compact .* from model\.safetensors/);
    await p.click('nav .tab[data-tab="photos"]');
    await p.setInputFiles("#photo-files", join(repo, "tests/images/astronaut.jpg"));
    await Promise.race([p.failure, p.waitForSelector(".photo img", { timeout: 120_000 })]);
    const got = JSON.parse(await p.textContent(".photo .prediction-json"));
    const want = fixtures.predictShippedJson();
    assert.equal(got.faces.length, 1);
    assert.equal(want.faces[0].emotion, "Happy", "the shipped model sees the astronaut's smile");
    assert.deepEqual(got.faces[0].box, want.faces[0].box);
    assert.equal(got.faces[0].emotion, want.faces[0].emotion);
    for (const [name, prob] of Object.entries(want.faces[0].probabilities)) {
      assert.ok(Math.abs(got.faces[0].probabilities[name] - prob) <= 1e-4, `${name}: ${got.faces[0].probabilities[name]} vs ${prob}`);
    }
  } finally {
    await p.close();
  }
});

test("every shader module and entry point compiles in the browser without an error or warning", async () => {
  const report = JSON.parse(await run(page, () => fergpuApp.engine.shaderReport()));
  const bad = report.messages.filter((m) => m.kind !== "info");
  assert.deepEqual(bad, [], JSON.stringify(bad, null, 1));
  assert.equal(report.modules, 13);
  assert.ok(report.pipelines >= 40, `only ${report.pipelines} pipelines built`);
  console.log(`${report.modules} modules, ${report.pipelines} pipelines compiled by the browser, ${report.messages.length} notes`);
});

test("every op family and a cnn and a compact training step match the CPU reference", async () => {
  const verdicts = JSON.parse(await run(page, () => fergpuApp.engine.parityReport()));
  const failed = verdicts.filter((v) => !v.ok);
  assert.deepEqual(failed, [], JSON.stringify(failed, null, 1));
  assert.ok(verdicts.length >= 40, `${verdicts.length} comparisons`);
  for (const family of ["conv 0 forward", "maxpool 3 backward", "dense grads", "batchnorm grads",
    "softmax d_logits", "adam params", "globalavgpool backward", "cnn step grads", "compact step params"]) {
    assert.ok(verdicts.some((v) => v.name === family && v.elements > 0), `no ${family}`);
  }
});

test("a natively trained checkpoint gives fergpu eval's probabilities in the page", async () => {
  const r = await run(page, async () => {
    const model = new Uint8Array(await (await fetch("/fixtures/model.safetensors")).arrayBuffer());
    const csv = new Uint8Array(await (await fetch("/fixtures/faces.csv")).arrayBuffer());
    const { CsvLoader } = await import("/pkg/fergpu_web.js");
    const loader = new CsvLoader("faces.csv", false);
    for (let i = 0; i < csv.length; i += 65536) loader.push(csv.subarray(i, i + 65536));
    const data = loader.finish();
    const classifier = fergpuApp.engine.loadModel(model, "model.safetensors");
    const probs = await classifier.classifyCrops(data.pixels("Training", 300));
    return Array.from(probs);
  });
  const want = fixtures.predictions();
  assert.equal(r.length, want.length * 7);
  let worst = 0;
  want.forEach((row, i) => row.forEach((p, c) => { worst = Math.max(worst, Math.abs(p - r[i * 7 + c])); }));
  console.log(`${want.length} images: max |Δp| = ${worst.toExponential(2)}`);
  assert.ok(want.length >= 200);
  assert.ok(worst <= 1e-5, `max |Δp| ${worst}`);
});

test("Photos: a dropped photo gets fergpu predict's faces and probabilities and an annotated image", async () => {
  // The page opened with the shipped model (compact): wait for the picked file's to replace it.
  await page.setInputFiles("#model-file", join(fixtures.dir, "model.safetensors"));
  await Promise.race([page.failure, page.waitForFunction(
    () => /Model: cnn/.test(document.getElementById("model-name").textContent), null, { timeout: 60_000 })]);
  await page.click('nav .tab[data-tab="photos"]');
  await page.setInputFiles("#photo-files", join(repo, "tests/images/astronaut.jpg"));
  await Promise.race([page.failure, page.waitForSelector(".photo img", { timeout: 120_000 })]);
  const got = JSON.parse(await page.textContent(".photo .prediction-json"));
  const want = fixtures.predictJson();
  assert.equal(got.faces.length, want.faces.length);
  assert.ok(got.faces.length >= 1, "the astronaut's face is found");
  got.faces.forEach((f, i) => {
    assert.deepEqual(f.box, want.faces[i].box);
    assert.equal(f.emotion, want.faces[i].emotion);
    for (const [name, p] of Object.entries(want.faces[i].probabilities)) {
      assert.ok(Math.abs(f.probabilities[name] - p) <= 1e-4, `${name}: ${f.probabilities[name]} vs ${p}`);
    }
  });
  const saved = await page.getAttribute(".photo a[download]", "download");
  assert.equal(saved, "astronaut-annotated.png");
  await page.screenshot({ path: join(shots, "photos.png"), fullPage: true });
});

test("Train: a dropped FER2013 CSV (gzip) is read as a stream, its bad rows listed by line number", async () => {
  await page.click('nav .tab[data-tab="train"]');
  const lines = readFileSync(join(fixtures.dir, "faces.csv"), "utf8").split("\n");
  lines.splice(4, 0, "9, Training, 1 2 3"); // line 5: an emotion out of range, too few pixels
  const file = join(fixtures.dir, "icml_face_data.csv.gz");
  writeFileSync(file, gzipSync(lines.join("\n")));
  await page.setInputFiles("#csv-file", file);
  await Promise.race([page.failure, page.waitForFunction(
    () => /bad rows skipped/.test(document.getElementById("data-summary").textContent), null, { timeout: 60_000 })]);
  const summary = await page.textContent("#data-summary");
  assert.match(summary, /icml_face_data\.csv\.gz: 600 rows/);
  assert.match(summary, /1 bad rows skipped:\n.*icml_face_data\.csv\.gz:5: /);
});

test("Train: two epochs on generated faces draw curves, evaluate the test split, and download a checkpoint fergpu reads", async () => {
  await page.click('nav .tab[data-tab="train"]');
  await page.fill("#synth-n", "300");
  await page.click("#synth-go");
  const recipe = join(fixtures.dir, "recipe.toml");
  writeFileSync(recipe, "# as fergpu train --config reads it\n[optimizer]\nlr = 0.002\n");
  await page.setInputFiles("#recipe-file", recipe);
  await page.waitForFunction(() => /lr/.test(document.getElementById("recipe-name").textContent));
  await page.selectOption("#set-model", "mlp");
  await page.fill("#set-epochs", "2");
  await page.fill("#set-batch", "32");
  await page.click("#train-start");
  await page.waitForFunction(() => document.getElementById("train-summary").textContent);
  assert.match(await page.textContent("#train-summary"), /mlp on .*, 2 epochs, lr 0\.002$/);
  await Promise.race([page.failure,
    page.waitForFunction(() => fergpuApp.lastProgress && fergpuApp.lastProgress.done, null, { timeout: 240_000 })]);
  assert.equal(await page.getAttribute("#curve-loss", "data-points"), "2");
  assert.equal(await page.getAttribute("#curve-acc", "data-points"), "2");
  await page.click("#train-test");
  await Promise.race([page.failure, page.waitForSelector("table.confusion", { timeout: 60_000 })]);
  const cells = await page.$$eval("table.confusion td", (tds) => tds.map((t) => Number(t.textContent)));
  assert.equal(cells.length, 49);
  const tested = await page.evaluate(() => JSON.parse(fergpuApp.data.summary()).per_split.find(([n]) => n === "PublicTest")[1]);
  assert.equal(cells.reduce((a, b) => a + b, 0), tested, `the test split's ${tested} images are counted once`);
  await page.screenshot({ path: join(shots, "train.png"), fullPage: true });
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#train-save")]);
  const file = join(fixtures.dir, "from-page.safetensors");
  await download.saveAs(file);
  const [onnx] = await Promise.all([page.waitForEvent("download"), page.click("#train-onnx")]);
  const onnxFile = join(fixtures.dir, "from-page.onnx");
  await onnx.saveAs(onnxFile);
  const model = readFileSync(onnxFile);
  // An ONNX ModelProto starts with its ir_version (field 1, varint) and names fergpu.
  assert.equal(model[0], 0x08);
  assert.ok(model.includes(Buffer.from("fergpu")) && model.length > 100_000, `${model.length} bytes`);
  const out = fixtures.evalNative(file);
  assert.match(out, /accuracy/i, out);
  console.log(`fergpu eval on the page's checkpoint: ${out.split("\n").find((l) => /accuracy/i.test(l))}`);
});

test("Camera: the fake camera's face gets a box and an emotion", async () => {
  const video = faceVideo(fixtures.dir, await page.evaluate(async () => {
    const img = new Image();
    img.src = "/images/astronaut.jpg";
    await img.decode();
    const c = document.createElement("canvas");
    c.width = 640; c.height = 480;
    const ctx = c.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, 640, 480);
    ctx.drawImage(img, 80, 0, 480, 480);
    return Array.from(ctx.getImageData(0, 0, 640, 480).data);
  }), 640, 480);
  const cam = await launch(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    `--use-file-for-fake-video-capture=${video}`]);
  try {
    const p = await openPage(cam, "#camera");
    await p.setInputFiles("#model-file", join(fixtures.dir, "model.safetensors"));
    await Promise.race([p.failure, p.waitForFunction(
      () => /Model: cnn/.test(document.getElementById("model-name").textContent), null, { timeout: 60_000 })]);
    await p.click("#camera-start");
    await Promise.race([p.failure, p.waitForFunction(
      () => fergpuApp.camera.frames >= 3 && fergpuApp.camera.lastFaces.length > 0, null, { timeout: 180_000 })]);
    const seen = await p.evaluate(() => ({ ...fergpuApp.camera, fps: document.getElementById("camera-fps").textContent }));
    assert.ok(seen.lastFaces[0].width > 50, JSON.stringify(seen.lastFaces));
    const bars = await p.$$eval("#camera-bars .bar", (b) => b.length);
    assert.equal(bars, 7);
    console.log(`camera: ${seen.frames} frames, ${(seen.ms / seen.frames).toFixed(0)} ms per frame; ${seen.fps}`);
    writeFileSync(join(shots, "camera-ms-per-frame.txt"), `${(seen.ms / seen.frames).toFixed(1)}\n`);
    await p.screenshot({ path: join(shots, "camera.png"), fullPage: true });
    await p.click("#camera-stop");
  } finally {
    await cam.close();
  }
});

test("without WebGPU the page says so and runs the CPU backend compiled to wasm, with the same probabilities", async () => {
  const context = await launch();
  try {
    // A browser without WebGPU: no navigator.gpu.
    await context.addInitScript(() => Object.defineProperty(Navigator.prototype, "gpu", { get: () => undefined }));
    const p = await openPage(context);
    const text = await p.textContent("#device");
    assert.match(text, /No WebGPU here: this browser has no WebGPU/);
    assert.equal(await p.evaluate(() => fergpuApp.engine.backend()), "cpu");
    const probs = await Promise.race([p.failure, p.evaluate(async () => {
      const model = new Uint8Array(await (await fetch("/fixtures/model.safetensors")).arrayBuffer());
      const csv = new Uint8Array(await (await fetch("/fixtures/faces.csv")).arrayBuffer());
      const { CsvLoader } = await import("/pkg/fergpu_web.js");
      const loader = new CsvLoader("faces.csv", false);
      loader.push(csv);
      const data = loader.finish();
      const classifier = fergpuApp.engine.loadModel(model, "model.safetensors");
      return Array.from(await classifier.classifyCrops(data.pixels("Training", 20)));
    })]);
    const want = fixtures.predictions().slice(0, 20);
    let worst = 0;
    want.forEach((row, i) => row.forEach((q, c) => { worst = Math.max(worst, Math.abs(q - probs[i * 7 + c])); }));
    assert.ok(worst <= 1e-5, `max |Δp| ${worst} on the CPU backend`);
  } finally {
    await context.close();
  }
});
