#!/usr/bin/env bash
# run_parity.sh PARITY_EXE SCRIPT OUT_DIR - the "parity" ctest: pare writes its
# GPT's logits, loss, gradients and AdamW losses; PyTorch recomputes them.
# Exit 77 (reported by ctest as skipped) when python3 or torch is missing.
set -euo pipefail
exe=$1 script=$2 out=$3
py=/usr/bin/python3
if [[ ! -x $py ]]; then
  echo "SKIP: $py not found; the PyTorch parity test did not run (scripts/deps.sh --test installs it)"
  exit 77
fi
if ! $py -c "import torch" 2>/dev/null; then
  echo "SKIP: PyTorch is not importable by $py; the parity test did not run (scripts/deps.sh --test installs python3-torch)"
  exit 77
fi
mkdir -p "$out"
"$exe" "$out"
exec $py "$script" "$out"/parity_*.bin
