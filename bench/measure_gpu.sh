#!/usr/bin/env bash
# Issue 11's GPU measurements in one command (see docs/RESULTS.md, "Not measured yet"):
#
#   bench/measure_gpu.sh [OUT_DIR]          # default gpu-results-<date>
#
# Builds fergpu (release), then on the adapter $ADAPTER (default: discrete) writes to OUT_DIR:
# - machine.txt: nvidia-smi, `fergpu adapters`, the commit;
# - profile-<model>-b<batch>.json/.txt: `fergpu profile` of the seed CNN at batch 32 and 512
#   and of the vgg and compact presets at batch 64, kernels autotuned afresh
#   (--autotune refresh); profile-cnn-b32-checked.txt keeps wgpu's bounds checks (what
#   building the GEMM shaders without them saves), profile-cnn-b32-unzeroed.txt skips
#   zero-filling the tiled kernels' workgroup memory (what that would save), and
#   profile-cnn-b32-<variant>.txt runs every GEMM as one variant;
# - bench-*.txt: `fergpu bench` (images/s, kernel GFLOP/s) for mlp/cnn at 32 and 512 and
#   vgg/compact at 64;
# - epoch-cnn-b32.txt, epoch-cnn-b512.txt: one FER2013-sized epoch (28,709 generated
#   training faces, then validation and test) through `fergpu train`, timed end to end;
# - pytorch-*.txt: PyTorch eager on the same GPU (bench/pytorch_seed_cnn.py), fp32 with TF32
#   off and with PyTorch's defaults: seed CNN at 32 and 512, vgg at 64, one epoch at 32.
#
# Environment: ADAPTER (fergpu --adapter), PYTHON (with torch; default python3), FERGPU (a
# fergpu binary to use instead of building one), QUICK=1 (tiny batches and steps, to try the
# script on a software adapter). A command that fails is
# logged in its file and the script goes on.
set -u
cd "$(dirname "$0")/.."
out=${1:-gpu-results-$(date +%Y%m%d-%H%M)}
adapter=${ADAPTER:-discrete}
python=${PYTHON:-python3}
mkdir -p "$out"
fergpu=${FERGPU:-}
if [ -z "$fergpu" ]; then
    cargo build --release || exit 1
    fergpu=target/release/fergpu
fi

if [ "${QUICK:-0}" = 1 ]; then
    small=2 large=4 vggb=2 steps=1 reps=1 pysteps=2 synthetic=200
else
    small=32 large=512 vggb=64 steps=20 reps=5 pysteps=300 synthetic=35887
fi

# run FILE COMMAND...: stdout and stderr to FILE, and the wall time at its end.
run() {
    local file=$1
    shift
    echo "== $*" | tee -a "$out/log.txt"
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$out/$file" 2>&1 || echo "FAILED (exit $?)" | tee -a "$out/$file" "$out/log.txt"
    t1=$(date +%s.%N)
    echo "wall: $(echo "$t1 - $t0" | bc) s" >>"$out/$file"
}

{
    nvidia-smi || true
    "$fergpu" adapters
    echo "commit $(git rev-parse HEAD)"
} >"$out/machine.txt" 2>&1

for mb in "cnn $small" "cnn $large" "vgg $vggb" "compact $vggb"; do
    set -- $mb
    run "profile-$1-b$2.json" "$fergpu" profile --adapter "$adapter" --model "$1" \
        --batch-size "$2" --autotune refresh --json
    run "profile-$1-b$2.txt" "$fergpu" profile --adapter "$adapter" --model "$1" \
        --batch-size "$2"
done
run "profile-cnn-b$small-checked.txt" "$fergpu" profile --adapter "$adapter" --model cnn \
    --batch-size "$small" --bounds-checks
run "profile-cnn-b$small-unzeroed.txt" "$fergpu" profile --adapter "$adapter" --model cnn \
    --batch-size "$small" --skip-workgroup-zeroing
for v in register "tiled 64x64x8/4x4" "tiled 128x128x8/8x8"; do
    run "profile-cnn-b$small-${v//[ \/]/-}.txt" "$fergpu" profile --adapter "$adapter" \
        --model cnn --batch-size "$small" --variant "$v"
done

run bench-mlp-cnn.txt "$fergpu" bench --adapter "$adapter" --models mlp,cnn \
    --batch-sizes "$small,$large" --steps "$steps" --kernel-reps "$reps"
run bench-vgg-compact.txt "$fergpu" bench --adapter "$adapter" --models vgg,compact \
    --batch-sizes "$vggb" --steps "$steps" --kernel-reps "$reps"

for b in "$small" "$large"; do
    rm -rf "$out/epoch-cnn-b$b"
    run "epoch-cnn-b$b.txt" "$fergpu" train --adapter "$adapter" --model cnn \
        --synthetic "$synthetic" --epochs 1 --batch-size "$b" --quiet --out "$out/epoch-cnn-b$b"
done

for defaults in "" "--torch-defaults"; do
    tag=${defaults:+-defaults}
    run "pytorch-cnn-b$small$tag.txt" "$python" bench/pytorch_seed_cnn.py --device cuda \
        --batch "$small" --steps "$pysteps" $defaults
    run "pytorch-cnn-b$large$tag.txt" "$python" bench/pytorch_seed_cnn.py --device cuda \
        --batch "$large" --steps "$pysteps" $defaults
    run "pytorch-vgg-b$vggb$tag.txt" "$python" bench/pytorch_seed_cnn.py --device cuda \
        --model vgg --batch "$vggb" --steps "$pysteps" $defaults
    run "pytorch-epoch-cnn-b$small$tag.txt" "$python" bench/pytorch_seed_cnn.py \
        --device cuda --batch "$small" --epoch $defaults
done
echo "results in $out"
