#!/usr/bin/env bash
# `make gpu-check`: the CUDA build on a machine with an NVIDIA GPU and its driver, prepared to
# fit in a few minutes of a lent machine. In order:
#   1. builds the CUDA binaries and runs the test suite with runtime.device = "auto", which
#      picks the GPU there (crates/bench/cuda-env.sh: the machine's own toolkit in CUDA_HOME,
#      or the pinned wheels where PyPI can be reached);
#   2. trains the same network from the same random weights on the CPU and on the GPU (no
#      dropout, 25 epochs of the bundled data: about 100 steps) and compares their final
#      validation losses, which must agree to 1e-3;
#   3. training speed (targets/s) and generation speed (tokens/s, 64 streams) on the GPU at
#      H = 512 and 1024, batch 64 and 256, on the bundled data in 7 keys.
# The table goes to stdout and target/cuda/gpu-check.md, headed by the GPU's name.
set -euo pipefail
source "$(dirname "$0")/cuda-env.sh"
if [ -n "${PIANOLA_EXPECT_CPU_FALLBACK:-}" ]; then
    echo "gpu-check: no NVIDIA driver here (no libcuda.so.1); \`make cuda-check\` checks the build without one"
    exit 1
fi
report="target/cuda/gpu-check.md"
gpu="$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)"
echo "gpu-check: $gpu"

cargo build --release --locked --workspace $CARGO_FLAGS
cargo test --release --locked --workspace $CARGO_FLAGS

bin="$CARGO_TARGET_DIR/release"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$bin/extract" --input data --output "$work/notes.bin"
"$bin/encode" --input "$work/notes.bin" --output "$work/dataset.bin"
"$bin/encode" --input "$work/notes.bin" --output "$work/keys.bin" --set 'encode.transpose=[-3,-2,-1,0,1,2,3]' --set encode.stride=25

last_loss() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["history"][-1]["validation_loss"])' "$1"; }
median_rate() { python3 -c 'import json, statistics, sys; print(round(statistics.median(e["targets_per_second"] for e in json.load(open(sys.argv[1]))["history"])))' "$1"; }

same=(--set train.init= --set train.dropout=0 --set train.epochs=25 --set train.patience=0)
for device in cpu cuda; do
    "$bin/train" --input "$work/dataset.bin" --output "$work/$device.bin" "${same[@]}" --set "runtime.device=$device"
done
cpu_loss="$(last_loss "$work/cpu.report.json")"
cuda_loss="$(last_loss "$work/cuda.report.json")"

{
    echo "# gpu-check, $(date -u +%Y-%m-%d): $gpu"
    echo
    echo "Validation loss after 25 epochs of the bundled data from the same weights: CPU $cpu_loss, GPU $cuda_loss."
    echo
    echo "| hidden | batch | training, targets/s | generation, tokens/s (64 streams) |"
    echo "|---|---|---|---|"
} > "$report"
for hidden in 512 1024; do
    for batch in 64 256; do
        "$bin/train" --input "$work/keys.bin" --output "$work/h$hidden-b$batch.bin" --set runtime.device=cuda \
            --set train.init= --set "train.hidden=$hidden" --set "train.batch_size=$batch" --set train.epochs=3
        rate="$(median_rate "$work/h$hidden-b$batch.report.json")"
        mkdir -p "$work/gen"
        start="$(date +%s.%N)"
        "$bin/compose" --input "$work/h$hidden-b$batch.bin" --no-dataset --outputs 64 --seconds 30 \
            --set runtime.device=cuda --output "$work/gen/piece.mid"
        end="$(date +%s.%N)"
        tokens="$(python3 -c 'import json, glob, sys; print(sum(json.load(open(p))["elements"] for p in glob.glob(sys.argv[1] + "/*.mid.report.json")))' "$work/gen")"
        rm -rf "$work/gen"
        echo "| $hidden | $batch | $rate | $(python3 -c "print(round($tokens / ($end - $start)))") |" >> "$report"
    done
done
cat "$report"
python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); sys.exit(0 if abs(a - b) <= 1e-3 else 'gpu-check: the GPU loss %.5f differs from the CPU loss %.5f by more than 1e-3' % (b, a))" "$cpu_loss" "$cuda_loss"
