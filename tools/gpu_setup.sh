# Sourced by the GPU training scripts: $out is where results go ($OUT on the device machine), and the
# carried wheels (.whl: compressai, constriction, pytorch-msssim for Python 3.12) are installed if missing.
out=${OUT:-/tmp/aecodec-out}
mkdir -p "$out"
if ! python3 -c "import compressai, constriction" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
