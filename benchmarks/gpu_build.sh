# Sourced by the GPU scripts (benchmarks/gpu_check.sh, scripts/gpu_table.sh) on the lent machine
# as it is: builds lshx's extension with CUDA in place, for sm_90, with the flags of
# csrc/cuda/nvcc.flags. Needs $OUT (build.log and gpu.txt go there); returns 1 when the build fails.
#
# The image's default g++ (/opt/gcc) links its own libstdc++ into the extension; the process
# already runs the system one, and the two crash when a TORCH_CHECK formats its message
# (seen 2026-11-28: segfault in ostream<<long). Build with the system compiler when there is one.
for c in /usr/bin/g++ /usr/bin/g++-13 /usr/bin/g++-12; do
  if [ -x "$c" ]; then export CXX=$c CC=${c/g++/gcc}; break; fi
done
echo "CXX=${CXX:-default} ($(${CXX:-g++} --version | head -1)); g++ on PATH: $(command -v g++)" | tee -a "$OUT/gpu.txt"
# in place (pip's editable install wants to fetch setuptools in an isolated env: nothing can be
# fetched there); lshx is imported from the checkout
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-16} FORCE_CUDA=1 timeout 300 \
    python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1; then
  echo "build FAILED" | tee -a "$OUT/summary.txt"; tail -40 "$OUT/build.log"; return 1
fi
