# make test / make train do the whole set-up on a fresh Debian 12 machine: missing packages, configure, build.
BUILD ?= build
JOBS ?= $(shell nproc)
CONFIG ?= configs/reverse.toml
CMAKE_FLAGS ?=
DEBS := cmake g++ make python3 libeigen3-dev libfmt-dev libspdlog-dev doctest-dev libtomlplusplus-dev nlohmann-json3-dev \
        libcli11-dev libbenchmark-dev libopenmpi-dev openmpi-bin libopenblas-dev libpcre2-dev libdnnl-dev unicode-data pkg-config

FUZZ_SECONDS ?= 60

.PHONY: all deps configure build test check-all train clean fuzz fuzz-configure sanitize layout
all: build

deps:
	@missing=""; for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "qkv: installing$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "qkv: missing Debian packages:$$missing"; \
	    echo "run:  sudo apt-get update && sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The inner loop: every test but those labelled slow (the installed package, mpirun, a browser, PyTorch).
test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) -LE slow

# Everything, slow tests included (CI runs this).
check-all: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# Trains the default config (replacing an earlier run of it), then shows the learned attention. Builds only the
# qkv program, not the tests, benchmarks or examples.
train: configure
	cmake --build $(BUILD) -j $(JOBS) --target qkv
	$(BUILD)/bin/qkv train $(CONFIG) --force

# The shape of the tree: no source file over 450 lines, no include cycle, the CLI's files used by no library file.
layout:
	python3 tools/check_layout.py

# Fuzzes every reader of outside input (safetensors files, configs and overrides, jsonl/text data, model metadata,
# token manifests and shards, tokenizer files, GPT-2 checkpoints' config.json)
# for FUZZ_SECONDS each with clang's libFuzzer + ASan/UBSan, in build-fuzz/. The seeds are tests/fuzz/corpus/TARGET
# (and the shipped configs for the config parser).
FUZZ_TARGETS := safetensors config data metadata manifest shard tokenizer gpt2
# One clang build with ASan + UBSan and libFuzzer's coverage, in build-fuzz: `make sanitize` builds and runs every
# test in it but the documentation's commands and the installed package (no memory question there), and
# `make fuzz` builds the fuzz targets in it. CI does both from the one build.
FUZZ_CMAKE := -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQKV_FUZZ=ON -DQKV_SANITIZE=address,undefined \
  -DQKV_BUILD_BENCH=OFF -DQKV_BUILD_EXAMPLES=OFF
fuzz-configure:
	@$(MAKE) --no-print-directory deps DEBS="$(DEBS) clang libclang-rt-14-dev"
	CXX=clang++ cmake -S . -B build-fuzz $(FUZZ_CMAKE)

sanitize: fuzz-configure
	cmake --build build-fuzz -j $(JOBS)
	ctest --test-dir build-fuzz --output-on-failure -j $(JOBS) -E '^(docs|package)/'

fuzz: fuzz-configure
	cmake --build build-fuzz -j $(JOBS) --target $(addprefix fuzz_,$(FUZZ_TARGETS))
	@for t in $(FUZZ_TARGETS); do \
	  rm -rf build-fuzz/corpus-$$t && cp -r tests/fuzz/corpus/$$t build-fuzz/corpus-$$t || exit 1; \
	  if [ $$t = config ]; then cp configs/*.toml build-fuzz/corpus-$$t/; fi; \
	  echo "qkv: fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  build-fuzz/bin/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
	    -print_final_stats=1 build-fuzz/corpus-$$t || exit 1; \
	done

clean:
	rm -rf $(BUILD) build-fuzz
