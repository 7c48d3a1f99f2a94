// How long the page takes to read FER2013 through its Train section's file picker (streamed,
// gzip inflated and parsed in wasm as the file arrives). A measurement, not a test; the file
// is the person's own copy and never leaves the machine.
//
//   node web/tests/load_fer2013.mjs PATH/icml_face_data.csv[.gz] [SITE_DIR]
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { serve } from "../serve.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const csv = resolve(process.argv[2]);
const site = resolve(process.argv[3] || join(here, "../dist"));
const server = await serve(site);
const context = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), "fergpu-load-")), {
  executablePath: process.env.FERGPU_CHROMIUM || "/usr/bin/chromium", headless: true,
  args: ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const page = await context.newPage();
await page.goto(`http://127.0.0.1:${server.address().port}/?backend=cpu#train`);
await page.waitForFunction(() => document.body.dataset.ready === "true");
const t0 = Date.now();
await page.setInputFiles("#csv-file", csv);
await page.waitForFunction(() => / rows \(/.test(document.getElementById("data-summary").textContent), null, { timeout: 600_000 });
const seconds = (Date.now() - t0) / 1000;
console.log(`${await page.textContent("#data-summary")}\nread in ${seconds.toFixed(1)} s (picked to summary shown)`);
await context.close();
server.close();
