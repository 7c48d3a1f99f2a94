// Training speed in the browser, fergpu against TensorFlow.js 4.22 on its WebGPU backend:
// the notebook CNN (Conv 128, pool, Conv 128, pool, Conv 64, pool, Conv 64, Dense 64 selu,
// Dense 7; Adam 1e-3) at batch 32 on the same images, in the same Chromium on the same
// adapter, one after the other. A benchmark, not a test: it prints images/s for both and
// their ratio (docs/RESULTS.md records them).
//
//   node web/tests/bench.mjs [SITE_DIR]        (after web/build.sh and npm ci in web/tests)
//
// Environment: FERGPU_BENCH_BATCHES (timed batches per side, default 4).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../serve.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const site = resolve(process.argv[2] || join(here, "../dist"));
const batches = Number(process.env.FERGPU_BENCH_BATCHES || 4);
const BATCH = 32;
const FLAGS = [
  "--enable-unsafe-webgpu", "--enable-features=Vulkan", "--use-vulkan=swiftshader",
  "--use-webgpu-adapter=swiftshader", "--disable-background-networking",
  "--disable-component-update", "--no-first-run", "--no-sandbox",
];

const server = await serve(site, 0, { "/tfjs/": join(here, "node_modules/@tensorflow") });
const base = `http://127.0.0.1:${server.address().port}`;
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "fergpu-bench-")), {
  executablePath: process.env.FERGPU_CHROMIUM || "/usr/bin/chromium", headless: true, args: FLAGS,
});
const page = await context.newPage();
page.on("console", (m) => console.log("page:", m.text()));
await page.goto(base + "/");
await page.waitForFunction(() => document.body.dataset.ready === "true", null, { timeout: 120_000 });

// fergpu: generated faces, one warm-up batch (pipelines, buffers), then `batches` timed.
const fergpu = await page.evaluate(async ({ batches, BATCH }) => {
  const { Data } = await import("/pkg/fergpu_web.js");
  const n = (batches + 2) * BATCH * 2; // Training gets 80%: enough for warm-up + timed batches
  const data = Data.synthetic(n, 1);
  const t = fergpuApp.engine.startTraining(data, null, JSON.stringify({ model: "cnn", epochs: 1, batch_size: BATCH }));
  await t.advance(1);
  const t0 = performance.now();
  await t.advance(batches);
  const s = (performance.now() - t0) / 1000;
  return { device: fergpuApp.engine.deviceName(), imagesPerSecond: (batches * BATCH) / s, seconds: s };
}, { batches, BATCH });
console.log(`fergpu: ${fergpu.imagesPerSecond.toFixed(2)} images/s (${batches} batches of ${BATCH} in ${fergpu.seconds.toFixed(1)} s) on ${fergpu.device}`);

// TensorFlow.js: the same network and optimizer, model.fit over the same number of batches.
await page.addScriptTag({ url: "/tfjs/tfjs/dist/tf.min.js" });
await page.addScriptTag({ url: "/tfjs/tfjs-backend-webgpu/dist/tf-backend-webgpu.min.js" });
const tfjs = await page.evaluate(async ({ batches, BATCH }) => {
  await tf.setBackend("webgpu");
  await tf.ready();
  const conv = (filters, extra = {}) => tf.layers.conv2d({ filters, kernelSize: 3, activation: "relu", ...extra });
  const pool = () => tf.layers.maxPooling2d({ poolSize: 2 });
  const model = tf.sequential({ layers: [
    conv(128, { inputShape: [48, 48, 1] }), pool(), conv(128), pool(), conv(64), pool(), conv(64),
    tf.layers.flatten(), tf.layers.dense({ units: 64, activation: "selu" }),
    tf.layers.dense({ units: 7, activation: "softmax" }),
  ] });
  model.compile({ optimizer: tf.train.adam(1e-3), loss: "categoricalCrossentropy", metrics: ["accuracy"] });
  const x = tf.randomUniform([BATCH * batches, 48, 48, 1]);
  const y = tf.oneHot(tf.randomUniform([BATCH * batches], 0, 7, "int32"), 7);
  const one = { x: x.slice([0], [BATCH]), y: y.slice([0], [BATCH]) };
  await model.fit(one.x, one.y, { batchSize: BATCH, epochs: 1, verbose: 0 });
  const t0 = performance.now();
  await model.fit(x, y, { batchSize: BATCH, epochs: 1, verbose: 0, shuffle: false });
  const s = (performance.now() - t0) / 1000;
  return { backend: tf.getBackend(), version: tf.version.tfjs, imagesPerSecond: (batches * BATCH) / s, seconds: s };
}, { batches, BATCH });
console.log(`TensorFlow.js ${tfjs.version} (${tfjs.backend}): ${tfjs.imagesPerSecond.toFixed(2)} images/s (${batches} batches of ${BATCH} in ${tfjs.seconds.toFixed(1)} s)`);
console.log(`fergpu / TensorFlow.js: ${(fergpu.imagesPerSecond / tfjs.imagesPerSecond).toFixed(2)}×`);
await context.close();
server.close();
