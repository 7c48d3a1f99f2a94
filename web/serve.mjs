// Serves a built fergpu site on localhost (WebGPU needs a secure context, and localhost is
// one). Only node's standard library; answers only on 127.0.0.1.
//
//   node web/serve.mjs [SITE_DIR] [PORT]     (defaults: web/dist, 8080)
import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname, join, normalize, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".png": "image/png",
  ".jpg": "image/jpeg",
  ".y4m": "application/octet-stream",
  ".safetensors": "application/octet-stream",
};

/// Starts serving `root` on 127.0.0.1:`port` (0: any free port), and each folder of
/// `mounts` (`{"/prefix/": folder}`, for tests' fixtures) under its prefix; resolves to the
/// server.
export function serve(root, port = 0, mounts = {}) {
  const server = createServer(async (req, res) => {
    try {
      let path = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
      let base = resolve(root);
      for (const [prefix, dir] of Object.entries(mounts)) {
        if (path.startsWith(prefix)) {
          base = resolve(dir);
          path = path.slice(prefix.length - 1);
        }
      }
      let file = normalize(join(base, path));
      if (file !== base && !file.startsWith(base + sep)) {
        res.writeHead(403).end();
        return;
      }
      if ((await stat(file)).isDirectory()) file = join(file, "index.html");
      const body = await readFile(file);
      res.writeHead(200, {
        "content-type": TYPES[extname(file)] || "application/octet-stream",
        "cache-control": "no-store",
      });
      res.end(body);
    } catch {
      res.writeHead(404).end("not found");
    }
  });
  return new Promise((ok) => server.listen(port, "127.0.0.1", () => ok(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const root = process.argv[2] || join(fileURLToPath(new URL(".", import.meta.url)), "dist");
  const server = await serve(root, Number(process.argv[3] || 8080));
  console.log(`fergpu: serving ${root} at http://localhost:${server.address().port}/ (Ctrl-C stops)`);
}
