// What the browser tests compare against, made by the native fergpu binary: generated faces,
// a checkpoint trained on them, `fergpu eval`'s probabilities and `fergpu predict`'s output
// for the test photo; and the fake camera's video.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";

/// Images whose probabilities the page must reproduce.
const COMPARED = 300;

/// Runs the native binary with `args`; returns its stdout and stderr.
function fergpu(bin, args) {
  try {
    return execFileSync(bin, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    throw new Error(`${bin} ${args.join(" ")} failed:\n${e.stdout}\n${e.stderr}`);
  }
}

/// Makes (once per folder) the native fixtures in `$FERGPU_FIXTURES` (default
/// target/web-fixtures): `faces.csv` (600 generated faces), `model.safetensors` (the notebook
/// CNN trained on 200 of them for one epoch on the CPU), `predictions.csv` (`fergpu eval`'s
/// probabilities of the first 300 Training images), `astronaut.json` (`fergpu predict
/// --json` of tests/images/astronaut.jpg).
export function nativeFixtures(repo) {
  const bin = resolve(process.env.FERGPU_BIN || join(repo, "target/debug/fergpu"));
  if (!existsSync(bin)) throw new Error(`no fergpu binary at ${bin}: build it (cargo build) or set FERGPU_BIN`);
  const dir = resolve(process.env.FERGPU_FIXTURES || join(repo, "target/web-fixtures"));
  mkdirSync(dir, { recursive: true });
  const faces = join(dir, "faces.csv");
  const model = join(dir, "model.safetensors");
  const preds = join(dir, "predictions.csv");
  const photo = join(dir, "astronaut.json");
  if (!existsSync(photo)) {
    fergpu(bin, ["synth", "--out", faces, "--rows", "600", "--seed", "3"]);
    const run = join(dir, "run");
    fergpu(bin, ["train", "--data", faces, "--model", "cnn", "--epochs", "1", "--limit", "200",
      "--adapter", "cpu", "--out", run, "--overwrite", "--quiet"]);
    writeFileSync(model, readFileSync(join(run, "checkpoint-best.safetensors")));
    fergpu(bin, ["eval", "--checkpoint", model, "--data", faces, "--split", "Training",
      "--limit", String(COMPARED), "--predictions", preds, "--adapter", "cpu"]);
    const json = fergpu(bin, ["predict", "--checkpoint", model, "--json", "--adapter", "cpu",
      join(repo, "tests/images/astronaut.jpg")]);
    writeFileSync(photo, json.trim().split("\n").pop());
  }
  return {
    dir,
    /// `fergpu eval`'s probabilities, one row of 7 per image.
    predictions() {
      const lines = readFileSync(preds, "utf8").trim().split("\n").slice(1);
      return lines.map((l) => l.split(",").slice(3).map(Number));
    },
    /// `fergpu predict --json`'s object for the test photo.
    predictJson() {
      return JSON.parse(readFileSync(photo, "utf8"));
    },
    /// `fergpu predict --json` of the test photo with the model shipped in the binary (no
    /// --checkpoint).
    predictShippedJson() {
      const json = fergpu(bin, ["predict", "--json", "--adapter", "cpu",
        join(repo, "tests/images/astronaut.jpg")]);
      return JSON.parse(json.trim().split("\n").pop());
    },
    /// `fergpu eval` of `checkpoint` on the generated faces; its output.
    evalNative(checkpoint) {
      return fergpu(bin, ["eval", "--checkpoint", checkpoint, "--data", faces, "--adapter", "cpu"]);
    },
  };
}

/// Writes a 2-second Y4M video (what Chromium's fake camera plays) of one RGBA frame
/// `(height, width, 4)` into `dir`; returns its path.
export function faceVideo(dir, rgba, width, height) {
  const { y, u, v } = i420(rgba, width, height);
  const header = Buffer.from(`YUV4MPEG2 W${width} H${height} F10:1 Ip A1:1 C420jpeg\n`);
  const frame = Buffer.concat([Buffer.from("FRAME\n"), y, u, v]);
  const path = join(dir, "face.y4m");
  writeFileSync(path, Buffer.concat([header, ...Array(20).fill(frame)]));
  return path;
}

/// RGBA to planar YUV 4:2:0 (BT.601 full range, chroma averaged over 2×2 pixels).
function i420(rgba, w, h) {
  const y = Buffer.alloc(w * h);
  const u = Buffer.alloc((w / 2) * (h / 2));
  const v = Buffer.alloc((w / 2) * (h / 2));
  const clamp = (x) => Math.max(0, Math.min(255, Math.round(x)));
  for (let row = 0; row < h; row++) {
    for (let col = 0; col < w; col++) {
      const i = 4 * (row * w + col);
      const [r, g, b] = [rgba[i], rgba[i + 1], rgba[i + 2]];
      y[row * w + col] = clamp(0.299 * r + 0.587 * g + 0.114 * b);
      if (row % 2 === 0 && col % 2 === 0) {
        const j = (row / 2) * (w / 2) + col / 2;
        u[j] = clamp(128 - 0.168736 * r - 0.331264 * g + 0.5 * b);
        v[j] = clamp(128 + 0.5 * r - 0.418688 * g - 0.081312 * b);
      }
    }
  }
  return { y, u, v };
}
