#!/usr/bin/env bash
# Prepare here what tools/train_gpu.sh needs on a lent GPU, and check that it travels: the device tool
# sends the working tree (tracked and untracked files) and the carried paths, 64 MiB in all.
#   .gpudata/photos  the training photos, whole, at 0.8 scale, AVIF 4:4:4 quality 78 (about 40 dB)
#   .whl             compressai, constriction, pytorch-msssim (cp312); .whl/fallback: Pillow with AVIF
# The shipped weights travel as tracked files (weights/), so they need no carrying.
set -euo pipefail
cd "$(dirname "$0")/.."
photos=${PHOTOS:-../shared/data/photos}
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
grep -qx "/.gpudata/" .git/info/exclude 2>/dev/null || echo /.gpudata/ >> .git/info/exclude
if [ ! -d .gpudata/photos ]; then
  python3 tools/prepare_data.py "$photos" .gpudata/photos --whole --scale "${SCALE:-0.8}" --format avif --quality "${QUALITY:-78}"
fi
if [ ! -d .whl/fallback ]; then
  wheel() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "$@"; }
  wheel --platform manylinux_2_34_x86_64 -d .whl compressai==1.2.8
  wheel --platform manylinux2014_x86_64 -d .whl constriction==0.5.0
  python3 -m pip download -q --no-deps -d .whl pytorch-msssim==1.0.0
  wheel --platform manylinux_2_28_x86_64 -d .whl/fallback pillow==13.0.0
fi
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
carry=$(du -sb .whl .gpudata | awk '{s += $1} END {print s}')
total=$((tree + carry))
printf 'travels: working tree %.1f MiB + carry %.1f MiB = %.1f MiB of 64\n' \
  "$(echo "$tree / 1048576" | bc -l)" "$(echo "$carry / 1048576" | bc -l)" "$(echo "$total / 1048576" | bc -l)"
[ "$total" -le $((64 * 1048576)) ] || { echo "too much to travel: carry fewer photos or a lower QUALITY" >&2; exit 1; }
