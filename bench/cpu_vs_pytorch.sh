#!/usr/bin/env bash
# fergpu's CPU backend against PyTorch on the same cores, one sitting, alternated: for each
# network and thread count, `rounds` rounds of fergpu bench then bench/pytorch_seed_cnn.py.
# Training and evaluation images/s; the figures in docs/RESULTS.md come from this script.
#
#   bench/cpu_vs_pytorch.sh FERGPU_BIN PYTHON [rounds] > cpu-vs-pytorch.txt
#
# PYTHON is a Python with torch installed (a venv outside the checkout; PyTorch is a measuring
# stick, never a dependency). Networks: compact b64 and the notebook CNN b32 on 2 and 1
# threads, vgg b64 on 2 threads. Run it on a quiet machine: nothing else on the cores.
set -euo pipefail
bin="$1"
py="$2"
rounds="${3:-3}"
here="$(cd "$(dirname "$0")" && pwd)"

echo "# $(date -u +%FT%TZ) $(uname -m) $(nproc) cores; $("$bin" --version)"
for case in "compact 64 2 10 30" "cnn 32 2 20 30" "compact 64 1 10 20" "cnn 32 1 20 20" \
    "vgg 64 2 5 10"; do
    read -r model batch threads fsteps psteps <<<"$case"
    for r in $(seq "$rounds"); do
        "$bin" bench --adapter cpu --threads "$threads" --models "$model" \
            --batch-sizes "$batch" --steps "$fsteps" --kernel-reps 1 2>/dev/null |
            grep -E "^(train|eval) $model b$batch" |
            sed "s/^/fergpu round $r threads $threads: /"
        "$py" "$here/pytorch_seed_cnn.py" --model "$model" --batch "$batch" \
            --threads "$threads" --steps "$psteps" |
            grep -E "^pytorch (train|eval)" |
            sed "s/^/round $r threads $threads: /"
    done
done
