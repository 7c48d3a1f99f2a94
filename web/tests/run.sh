#!/usr/bin/env bash
# The web app's checks, as .ci/run runs them: the page's Rust is formatted and lint-free, the
# site builds (web/build.sh), and the browser tests pass in Debian's headless Chromium with
# WebGPU on SwiftShader. Needs: chromium, node and npm, the wasm toolchain web/build.sh
# describes, and a native fergpu binary (FERGPU_BIN, default target/debug/fergpu) for the
# fixtures.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

cargo fmt --manifest-path web/Cargo.toml -- --check
# Natively, in the library's target folder: the dependencies `cargo clippy` checked for the
# library are reused.
cargo clippy --manifest-path web/Cargo.toml --locked --all-targets \
    --target-dir "${CARGO_TARGET_DIR:-$root/target}" -- -D warnings

site="${FERGPU_SITE:-$root/web/dist}"
web/build.sh --out "$site"

(cd web/tests && npm ci --no-audit --no-fund --ignore-scripts)
FERGPU_SITE="$site" node --test --test-concurrency=1 --test-timeout=600000 web/tests/browser.test.mjs
