#!/usr/bin/env bash
# deploy/gpu/run-on-device.sh — runs on the GPU machine, from the repository
# root, with the parts that deploy/gpu/bundle.sh made carried under .gpu/.
#
#   run-on-device.sh stash   keep the parts carried so far in $SEER_GPU_STORE
#                            (default /opt/seer-gpu), outside the checkout
#   run-on-device.sh         stash, then assemble and verify the bundle and
#                            run the GPU checks; results go to $OUT (or .gpu/out)
#
# The checks: the GPU, its driver and the ONNX Runtime version; the example
# model and a 5-million-parameter MLP (deploy/examples/mlp/export.py) give the
# same outputs on the GPU as on the CPU within 1e-5; and each is timed on
# both at batch sizes 1, 64, 1024 and 8192 (`seer models bench`); and the
# example package's held-out examples reproduce on the GPU through serve's
# own scoring path (`seer models validate --device cuda:0`).
set -euo pipefail
store=${SEER_GPU_STORE:-/opt/seer-gpu}
out=${OUT:-.gpu/out}
mkdir -p "$store" "$out"
for p in .gpu/bundle.tar.xz.part-* .gpu/SHA256SUMS; do
  [ -f "$p" ] && cp "$p" "$store/"
done
echo "[gpu] stashed: $(cd "$store" && ls bundle.tar.xz.part-* 2>/dev/null | tr '\n' ' ')"
[ "${1:-}" = stash ] && exit 0

cd "$store"
cat bundle.tar.xz.part-* >bundle.tar.xz
sha256sum -c SHA256SUMS || { echo "[gpu] the assembled bundle does not match SHA256SUMS: a part is missing or damaged" >&2; exit 1; }
rm -rf bundle && mkdir bundle
python3 -c 'import lzma, sys, tarfile; tarfile.open(fileobj=lzma.open(sys.argv[1])).extractall(sys.argv[2])' bundle.tar.xz bundle
(cd bundle/lib && sha256sum -c SHA256SUMS)
cd - >/dev/null
# A newer seer binary carried on its own replaces the bundle's.
if [ -x .gpu/seer ]; then cp .gpu/seer "$store/bundle/seer"; echo "[gpu] using the carried .gpu/seer"; fi

# CUDA 13 runtime, cuBLAS and cuDNN 9 come from the nvidia-* wheels of the
# machine's Python.
libdirs=$(python3 - <<'PY'
import glob, os, site
dirs = set()
for sp in site.getsitepackages():
    for pat in ("nvidia/*/lib", "nvidia/*/*/lib", "nvidia/cu13/lib"):
        for d in glob.glob(os.path.join(sp, pat)):
            if glob.glob(os.path.join(d, "*.so*")):
                dirs.add(d)
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$store/bundle/lib:$libdirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export SEER_ONNXRUNTIME_LIB=$store/bundle/lib/libonnxruntime.so.1
seer=$store/bundle/seer

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv | tee "$out/gpu.csv"
nproc | sed 's/^/cpu cores: /'
echo "== the larger example model"
python3 deploy/examples/mlp/export.py "$store/mlp.onnx"
rc=0
echo "== card-fraud (the example package): GPU against CPU"
"$seer" models bench deploy/examples/card-fraud --device cuda:0 --require-device --batches 1,64,1024,8192 --min-time 1s --json "$out/card-fraud.json" || rc=1
echo "== card-fraud's 5,000 held-out examples scored on the GPU as serve scores events (seer models validate --device cuda:0)"
"$seer" models validate deploy/examples/card-fraud --device cuda:0 || rc=1
echo "== MLP, 5.2 million parameters: GPU against CPU"
"$seer" models bench "$store/mlp.onnx" --device cuda:0 --require-device --batches 1,64,1024,8192 --min-time 1s --json "$out/mlp.json" || rc=1
exit $rc
