# make test / make train do the whole set-up on a fresh Debian 12 machine: missing packages, configure, build.
BUILD ?= build
JOBS ?= $(shell nproc)
CONFIG ?= configs/reverse.toml
CMAKE_FLAGS ?=
DEBS := cmake g++ make libeigen3-dev libfmt-dev libspdlog-dev doctest-dev libtomlplusplus-dev nlohmann-json3-dev \
        libcli11-dev libbenchmark-dev

.PHONY: all deps configure build test train clean
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

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

# Trains the default config (replacing an earlier run of it), then shows the learned attention.
train: build
	$(BUILD)/bin/qkv train $(CONFIG) --force

clean:
	rm -rf $(BUILD)
