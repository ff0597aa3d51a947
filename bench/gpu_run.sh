#!/usr/bin/env bash
# On the lent GPU machine (the device tool runs this in the repo root; $OUT comes back):
#   bash bench/gpu_run.sh smoke   # correctness of the GPU path + a short bench
#   bash bench/gpu_run.sh full    # the benchmark whose results are in bench/results/
# Needs the wheels of sam2/hydra/omegaconf/iopath/antlr4 in .whl/ (../shared/tools/device-wheels.sh)
# and the sample frames in .bench_frames/bedroom (both carried; neither is tracked).
set -o pipefail
export PYTHONUNBUFFERED=1
mode=${1:-smoke}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl 2>/dev/null || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || echo "pip -e failed"
python3 -c "import fastsam2.tools.bench, sam2, torch; print('torch', torch.__version__, torch.cuda.get_device_name())" || exit 1
nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv | tee "$OUT/nvidia-smi.txt"
frames=.bench_frames/bedroom
if [ "$mode" = smoke ]; then
  python3 bench/gpu_smoke.py --frames-dir $frames 2>&1 | tee "$OUT/smoke.log" || exit 1
  python3 -m fastsam2.tools.cli bench --device cuda --cuda-graphs --dtype bfloat16 --keep 1.0,0.3 \
    --frames 60 --frames-dir $frames --json "$OUT/smoke_bench.json" 2>&1 | tee -a "$OUT/smoke.log"
else
  python3 -m fastsam2.tools.cli bench --config tiny --backend torch --device cuda \
    --keep 1.0,0.5,0.3 --frames 60,200,1000 --dtype bfloat16 --cuda-graphs --official-offload \
    --frames-dir $frames --json "$OUT/gpu_h100.json" --plot "$OUT/gpu_h100.png" 2>&1 | tee "$OUT/gpu_h100.log"
fi
