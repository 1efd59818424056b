# make demo  - set up .venv (CPU torch), build lshx, run a small real job on PTB-16%
# make test  - set up when needed, then run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lshx-installed
TORCH_INDEX ?=
# ray: --executor ray and its tests (a two-node cluster on the loopback address); pinned to the
# version those tests ran with. Its own stamp, so that an existing .venv gets it without a rebuild.
RAY_VERSION := 2.60.0
RAY_STAMP := $(VENV)/.ray-$(RAY_VERSION)

.PHONY: demo test setup bench clean nvcc-check

setup: $(STAMP) $(RAY_STAMP)

$(RAY_STAMP): $(STAMP)
	$(BIN)/pip install -q ray==$(RAY_VERSION)
	touch $(RAY_STAMP)

$(STAMP): setup.py csrc/lshx.cpp $(wildcard csrc/cpu/*.cpp csrc/*.h)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0 $(TORCH_INDEX)
	$(BIN)/pip install -q numpy scikit-learn hyperopt==0.3.0 lightgbm click matplotlib optuna pybind11 ninja pytest setuptools wheel
	$(BIN)/pip install -q --no-build-isolation -e .
	touch $(STAMP)

# The machinery end to end on the smoke preset (a tiny model on a few windows of PTB-16%, a
# minute or less; rerunning it resumes or prints the finished result), then the paper's claim
# on real numbers: LSH against the loss-based search, replayed on the committed GS-24 table
# (training noise included when it holds several training seeds), its verdict with intervals.
TABLE_DB := docs/tables/gs24-small-P12.sqlite
demo: $(STAMP)
	@echo "== a smoke-preset search: it shows the machinery (training, spectra, eliminations, the pick); the"
	@echo "   model is tiny and trains for seconds, so its pick says nothing about pruning"
	$(BIN)/lshx search ptb-lstm --preset smoke --executor process --workers 2 \
	  --db runs/demo.sqlite --name demo --resume
	@echo "== LSH (pca2) against the loss-based search, replayed on the committed GS-24 table (ptb-lstm, small"
	@echo "   preset, 12 epochs of PTB-16% per run): e0 = ei = 1 and the paper's e0 = ei = 3, grid, n = 8"
	$(BIN)/lshx study replay $(TABLE_DB) --table gs24-small-P12 --methods lsh-pca2,loss \
	  --hpo grid --n 8 --setting 1/1 --setting 3/3 --seeds 200 --no-full-curve --workers 2 --quiet

# pytest exits 5 when it ran no test: that is a failure here, not a pass
# (-rs: every skipped test is listed with its reason)
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -q -rs tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test ran" >&2; exit 1; fi; exit $$rc

# Compiles every .cu with nvcc and the build's own flags (csrc/cuda/nvcc.flags, which setup.py
# reads too) for sm_90 ( the H100's, so the cooperative kernel is checked for
# the card it targets), then syntax-checks the ATen bindings (csrc/cuda/*.cpp) against the
# CUDA runtime headers nvcc itself uses (asked with --dryrun: nvcc may be a wrapper) and
# the torch headers of .venv. A CPU torch wheel lacks one generated
# c10/cuda header (build flags only); a one-line stand-in is made for it under build/.
NVCC_INC := build/nvcc-check-include
nvcc-check: $(STAMP)
	@for f in csrc/cuda/*.cu; do echo "nvcc -c $$f"; nvcc $$(cat csrc/cuda/nvcc.flags) -arch=sm_90 -c $$f -o /dev/null || exit 1; done
	@T=$$($(BIN)/python -c "import torch, os; print(os.path.dirname(torch.__file__))"); \
	CUDA_INC=$$(nvcc --dryrun -x cu -E /dev/null -o /dev/null 2>&1 | sed -n 's/.*INCLUDES="\([^"]*\)".*/\1/p' | head -1); \
	mkdir -p $(NVCC_INC)/c10/cuda/impl; \
	test -f $$T/include/c10/cuda/impl/cuda_cmake_macros.h || echo '#pragma once' > $(NVCC_INC)/c10/cuda/impl/cuda_cmake_macros.h; \
	for f in csrc/cuda/*.cpp; do echo "g++ -fsyntax-only $$f"; \
	  $${CXX:-g++} -std=c++17 -Wno-c++20-extensions -fsyntax-only -DWITH_CUDA -I$(NVCC_INC) -I$$T/include \
	    -I$$T/include/torch/csrc/api/include $$CUDA_INC $$($(BIN)/python3-config --includes 2>/dev/null || \
	    $(BIN)/python -c "import sysconfig; print('-I' + sysconfig.get_paths()['include'])") $$f || exit 1; done

clean:
	rm -rf build *.egg-info lshx/_C*.so
