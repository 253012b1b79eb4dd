# Sourced by the GPU training scripts: $out is where results go ($OUT on the device machine), and the
# carried wheels (.whl: compressai, constriction, pytorch-msssim for Python 3.12) are installed if missing.
# Pillow (.whl/fallback) is installed only where the machine's own cannot decode the carried AVIF photos.
out=${OUT:-/tmp/aecodec-out}
mkdir -p "$out"
wheels=()
python3 -c "import compressai, constriction" 2>/dev/null || wheels+=(.whl/*.whl)
python3 -c "from PIL import features; assert features.check('avif')" 2>/dev/null || wheels+=(.whl/fallback/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
