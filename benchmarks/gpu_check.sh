#!/usr/bin/env bash
# The prepared GPU check for a lent CUDA machine: one go, well under ten minutes.
#
#   1. copilot's loop with every instrument against a bare loop on CUDA   (target: <= 1.03x)
#   2. the same against the study's per-parameter .item() method          (target: copilot >= 1.5x faster)
#   3. the on-device data path against a hand-written loop                 (target: >= 0.9x its samples/s)
#   4. copilot's DDP loop on one GPU (NCCL) against a bare one, for the record
#
# Each benchmark prints its figures as its last line; the last line here is one JSON object
# of all of them with a verdict per target. Run from the repository root:
#
#   bash benchmarks/gpu_check.sh [OUTPUT_FOLDER]
set -euo pipefail
out="${1:-${OUT:-/tmp/copilot-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device here'; print(torch.__version__, torch.cuda.get_device_name(0))"
timeout 240 python3 benchmarks/instrument_overhead.py --device cuda --model study | tee "$out/instrument_overhead.txt"
timeout 150 python3 benchmarks/data_path.py --device cuda | tee "$out/data_path.txt"
timeout 150 python3 benchmarks/distributed_scaling.py --device cuda --ranks 1 | tee "$out/distributed_scaling.txt"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
last = {name: json.loads((out / f"{name}.txt").read_text().strip().splitlines()[-1]) for name in ("instrument_overhead", "data_path", "distributed_scaling")}
instruments, data = last["instrument_overhead"], last["data_path"]
verdicts = {
    "copilot_every_instrument_vs_bare_le_1.03": instruments["copilot_vs_bare"] <= 1.03,
    "copilot_at_least_1.5x_faster_than_study": instruments["copilot_vs_study"] <= 1 / 1.5,
    "data_path_ge_0.9_of_hand_written": data["copilot_vs_hand_written_samples_per_sec_with_training_step"] >= 0.9,
}
summary = {**{f"{name}.{key}": value for name, figures in last.items() for key, value in figures.items()}, "verdicts": verdicts}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary))
PY
