#!/usr/bin/env bash
# The GPU benchmarks the issues name, in one run (a GPU box with CUDA torch; see README "Benchmarks").
#   bash benchmarks/gpu_checks.sh [OUTDIR] [contact|genzi|hoi|fitting ...]
# Each benchmark runs under its own time limit, so one failure never hides the others' figures.
set -u
out="${1:-artifacts/gpu}"; shift || true
which=("$@"); [ ${#which[@]} -gt 0 ] || which=(contact hoi genzi fitting)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
    | tee -a "$out/gpu.txt"
run() {  # name, seconds, command...
    local name=$1 limit=$2; shift 2
    echo "== $name (limit ${limit}s): $*"
    local start=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local status=$?
    tail -n 40 "$out/$name.log"
    echo "== $name: exit $status after $((SECONDS - start)) s"
}
for name in "${which[@]}"; do
    case $name in
        contact) run contact 220 python3 benchmarks/bench_contact.py --full ;;
        hoi) run hoi 90 python3 benchmarks/bench_hoi.py --gpu ;;
        genzi) run genzi 480 python3 benchmarks/bench_genzi.py --gpu ;;
        fitting) run fitting 60 python3 benchmarks/bench_fitting.py --gpu ;;
        *) echo "unknown benchmark $name" ;;
    esac
done
