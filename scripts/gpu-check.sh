#!/usr/bin/env bash
# The GPU check (issue 28): on a CUDA machine, the Triton kernel's tests on the device
# (tests/gpu, marker gpu) and the benchmark (benchmarks/gpu.py), with one summary.
#
#   bash scripts/gpu-check.sh            # writes $OUT/ (the device tool's folder) or ./gpu-check-out/
#
# Made for the device tool: a copy of the working tree, python3 with torch/triton/numba,
# no network. It installs nothing it does not have to: rmsprop is imported from src/
# (PYTHONPATH); only if torch, triton, numba, numpy or pytest is missing does it try pip.
# Every step has its own time limit, so the summary is always written; target under 8
# minutes on an H100 (tests 270 s, benchmark 180 s at most). Without a CUDA device it runs
# what runs on the CPU instead: the tests' interpreter subset and the benchmark's --quick.
# Files (at most 6, for the device tool's 8): summary.txt, env.txt, gpu-tests.log,
# gpu-tests.xml, gpu-bench.log, gpu-bench.json (commit it as
# benchmarks/results/gpu-<device>.json; the summary names it).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEST=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$DEST"
SUMMARY=$DEST/summary.txt
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export RMSPROP_BACKGROUND_COMPILE=0  # no background compile process left behind
TEST_LIMIT=${GPU_CHECK_TEST_SECONDS:-270}
BENCH_LIMIT=${GPU_CHECK_BENCH_SECONDS:-180}
declare -A RC SECS

say() { echo "$*" | tee -a "$SUMMARY"; }
step() {  # step NAME LIMIT LOG COMMAND...: run with a time limit, record rc and seconds
  local name=$1 limit=$2 log=$3 t0
  shift 3
  t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  RC[$name]=$?
  SECS[$name]=$(($(date +%s) - t0))
  echo "   rc=${RC[$name]} in ${SECS[$name]}s"
}
finish() {
  {
    echo
    echo "steps (rc, seconds; rc 124 = its time limit):"
    for name in "${!RC[@]}"; do echo "  $name: rc=${RC[$name]} ${SECS[$name]}s"; done
    echo "total: $(($(date +%s) - START)) s; everything in $DEST"
  } | tee -a "$SUMMARY"
}
trap finish EXIT

: >"$SUMMARY"
say "rmsprop GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

# --- python: this checkout's .venv if it has torch, else python3
PY=python3
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null; then PY=.venv/bin/python; fi
missing=$($PY - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "triton", "numba", "numpy", "pytest")
               if importlib.util.find_spec(m) is None))
EOF
)
if [ -n "$missing" ]; then
  say "missing: $missing; trying pip (the device may have no registry)"
  step install 180 "$DEST/env.txt" $PY -m pip install -q $missing
fi
$PY - >"$DEST/env.txt" 2>&1 <<'EOF'
import platform, sys
import torch
print("python", sys.version.split()[0], platform.machine())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"{p.total_memory / 2**30:.1f} GiB", p.multi_processor_count, "SMs")
for name in ("triton", "numba", "numpy", "pytest", "xdist"):
    try:
        print(name, __import__(name).__version__)
    except Exception as err:
        print(name, "missing:", err)
EOF
nvidia-smi -L >>"$DEST/env.txt" 2>&1 || true
sed 's/^/  /' "$DEST/env.txt" | tee -a "$SUMMARY"
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

# --- the tests: every gpu test on a device (in parallel where pytest-xdist is there:
# the numba kernels the comparison needs compile in the workers), else the interpreter's
if [ "$CUDA" = 1 ]; then
  PAR=()
  if $PY -c "import xdist" 2>/dev/null; then PAR=(-n 8); fi
  step tests "$TEST_LIMIT" "$DEST/gpu-tests.log" $PY -m pytest tests/gpu -m gpu -q -p no:cacheprovider \
    "${PAR[@]}" --junitxml="$DEST/gpu-tests.xml" -o junit_family=xunit1
else
  say "no CUDA device: the tests' interpreter subset and the benchmark's --quick (no GPU numbers)"
  step tests "$TEST_LIMIT" "$DEST/gpu-tests.log" env TRITON_INTERPRET=1 $PY -m pytest tests/gpu -q \
    -p no:cacheprovider --junitxml="$DEST/gpu-tests.xml"
fi
say ""
say "tests: $(grep -E '(passed|failed|error)' "$DEST/gpu-tests.log" | tail -1)"
grep -E '^(FAILED|ERROR) ' "$DEST/gpu-tests.log" | head -40 | sed 's/^/  /' | tee -a "$SUMMARY"

# --- the benchmark
BENCH=(benchmarks/gpu.py --json "$DEST/gpu-bench.json")
[ "$CUDA" = 1 ] || BENCH+=(--sizes 4K --small 3 --repeats 1 --warmup 0 --only "rmsprop triton,torch foreach")
step bench "$BENCH_LIMIT" "$DEST/gpu-bench.log" $PY "${BENCH[@]}"
say ""
say "benchmark ($PY ${BENCH[*]}):"
sed 's/^/  /' "$DEST/gpu-bench.log" | tail -60 | tee -a "$SUMMARY"
$PY - "$DEST/gpu-bench.json" 2>&1 <<'EOF' | tee -a "$SUMMARY"
import json, re, sys
try:
    result = json.load(open(sys.argv[1]))
except (OSError, ValueError) as err:
    sys.exit(f"  no benchmark results: {err}")
slug = re.sub(r"[^a-z0-9]+", "-", result["device"].lower()).strip("-")
print(f"  commit the JSON as benchmarks/results/gpu-{slug}.json")
print("targets (fp32 one tensor, impl=triton): >= 85% of the in-place probe, >= 2x torch foreach,"
      " >= 1x torch.compile")
for r in result["rows"]:
    if r["impl"] == "rmsprop triton" and r["state"] == "fp32" and r["tensors"] == 1:
        if "median_ms" not in r:
            print(f"  {r['suite']} {r['config']}: {r.get('error')}")
            continue
        marks = [f"{r['of_inplace_probe']:.0%} of in-place" + (" ok" if r['of_inplace_probe'] >= 0.85 else " MISSED")]
        for key, need in (("vs_torch_foreach", 2.0), ("vs_torch_compile", 1.0)):
            if key in r:
                marks.append(f"{key} {r[key]:.2f}x" + (" ok" if r[key] >= need else " MISSED"))
        print(f"  {r['suite']} {r['config']}: " + ", ".join(marks))
EOF

# exit status: the tests' (the summary is written whatever it is)
exit "${RC[tests]:-1}"
