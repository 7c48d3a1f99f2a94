#!/usr/bin/env bash
# Builds fergpu's web app into one folder: the library compiled to wasm32 with its JS
# bindings (wasm-bindgen), and the page's static files. Serve the folder on localhost
# (`node web/serve.mjs`) and open it in a browser with WebGPU.
#
#   web/build.sh [--out DIR] [--model CHECKPOINT.safetensors | --no-model] [--dev]
#
#   --out DIR     where the site goes (default web/dist; emptied first)
#   --model FILE  the checkpoint to ship with the site as model.safetensors (the page loads
#                 it for the Camera and Photos sections); default: fergpu's shipped model,
#                 assets/model/fer2013-compact.safetensors (docs/MODEL_CARD.md)
#   --no-model    ship none: the person picks a checkpoint file or trains one
#   --dev         an unoptimised build (faster to compile, slower to run)
#
# The wasm32 standard library comes from one of two places:
#   - rustup's wasm32-unknown-unknown target (`rustup target add wasm32-unknown-unknown`),
#     used when installed;
#   - otherwise Debian's rustc-web and rust-web-src (Rust 1.96): cargo builds the standard
#     library from source (-Zbuild-std) with /usr/bin/rustc, linked by the rustup
#     toolchain's rust-lld (Debian's rustc ships no wasm linker).
# wasm-bindgen-cli is installed at the version web/Cargo.lock pins when it is missing.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/web/dist"
model="$root/assets/model/fer2013-compact.safetensors"
profile="release"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$(realpath -m "$2")"; shift 2 ;;
        --model) model="$(realpath "$2")"; shift 2 ;;
        --no-model) model=""; shift ;;
        --dev) profile="dev"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "web/build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done

target=wasm32-unknown-unknown
target_dir="${CARGO_TARGET_DIR:-$root/web/target}"
profile_dir=$([ "$profile" = release ] && echo release || echo debug)
cargo_args=(build --manifest-path "$root/web/Cargo.toml" --lib --target "$target"
    --target-dir "$target_dir" --profile "$profile" --locked)

if rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    echo "web/build.sh: wasm32 standard library from rustup"
    cargo "${cargo_args[@]}"
elif [ -x /usr/bin/rustc ] && [ -d /usr/lib/rustlib/src/rust/library ]; then
    host="$(rustc -vV | sed -n 's/^host: //p')"
    lld="${FERGPU_WASM_LINKER:-$(rustc --print sysroot)/lib/rustlib/$host/bin/rust-lld}"
    if [ ! -x "$lld" ]; then
        echo "web/build.sh: no wasm linker at $lld; install rustup's toolchain or set" \
            "FERGPU_WASM_LINKER to a rust-lld" >&2
        exit 1
    fi
    echo "web/build.sh: wasm32 standard library built from Debian's rust-web-src ($(/usr/bin/rustc --version))"
    RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$lld" \
        cargo -Zbuild-std=std,panic_abort "${cargo_args[@]}"
else
    echo "web/build.sh: no wasm32 standard library: run \`rustup target add $target\`" \
        "(or, on Debian, \`apt-get install rustc-web rust-web-src\`)" >&2
    exit 1
fi

# The bindings generator must match the wasm-bindgen crate exactly.
want="$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print}' "$root/web/Cargo.lock")"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
    echo "web/build.sh: installing wasm-bindgen-cli $want (found '${have:-none}')"
    # Not --locked: its lock file pins a webpki-roots release the registry no longer serves.
    cargo install wasm-bindgen-cli --version "$want"
fi

rm -rf "$out"
mkdir -p "$out/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$out/pkg" \
    "$target_dir/$target/$profile_dir/fergpu_web.wasm"
cp -r "$root/web/static/." "$out/"
if [ -n "$model" ]; then
    cp "$model" "$out/model.safetensors"
fi
echo "web/build.sh: site in $out ($(du -sh "$out" | cut -f1)); serve it with: node web/serve.mjs $out"
