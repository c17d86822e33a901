#!/usr/bin/env bash
# The CUDA check of issue 16: goldens on the GPU, then the segmenter and end-to-end speed tables.
# Budget: under 8 minutes on one GPU (each step has its own timeout). Run from anywhere:
#     bash benchmarks/gpu_check.sh [PYTHON]        # default python: .venv/bin/python, else python3
# Prints everything to stdout; copy the tables into docs/model.md ("Speed", GPU rows).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH="$PWD/src:$PWD/tests:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
status=0
step() { echo; echo "=== $1"; shift; "$@" || { echo "!!! failed (exit $?): $*"; status=1; }; }

step "device" "$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" || exit 1
# 1. goldens on CUDA (fp32, TF32 off), the bf16 fast path's deviation there, and the matching solved
#    while the next window segments (pinned copies, events) equal to the sequential order (~2 min)
step "goldens on cuda" env DVIS_TEST_DEVICE=cuda timeout 180 "$PY" -m pytest -q -p gpu_plugin -p no:cacheprovider \
    tests/test_segmenter.py tests/test_tracker_refiner_golden.py tests/test_e2e_golden.py \
    tests/test_fast_path.py tests/test_dvis_model.py \
    -k "golden or bf16 or per_level or fast_attention or unchanged or overlapped" -s
# 2. segmenter s/frame, fp32 vs bf16, R50 and Swin-L at 480x640, 4 frames per call (~1.5 min)
step "segmenter r50" timeout 90 "$PY" benchmarks/segmenter_speed.py --device cuda --frames 4 --repeats 5
step "segmenter swin-l" timeout 120 "$PY" benchmarks/segmenter_speed.py --device cuda --backbone swin-l --frames 4 --repeats 5
# 3. end to end, dvis segment's code path, 64 frames 480x640 in each mode (~2.5 min)
step "throughput" timeout 180 "$PY" benchmarks/throughput.py --device cuda --frames 64 --workdir /tmp/dvis-throughput-gpu
exit $status
