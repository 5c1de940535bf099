# The two commands a newcomer needs: `make run` and `make test`. Everything
# else here is a named build mode (see CMakePresets.json).
.PHONY: deps build run test test-asan test-tsan test-slow sim-long fuzz fuzz-build format clean

JOBS ?= $(shell nproc)
# Tests carrying these labels are slow (soak, benchmarks) and stay out of `make test`.
SLOW_LABELS ?= slow|bench

deps:
	./scripts/install-deps.sh

build-%: deps
	cmake --preset $*
	cmake --build --preset $* -j $(JOBS)

build: build-release

run: build-release
	./build/release/src/cmd/capstan dev

test: build-release
	ctest --preset release -LE '$(SLOW_LABELS)'

test-asan: build-debug
	ctest --preset debug -LE '$(SLOW_LABELS)'

test-tsan: build-tsan
	ctest --preset tsan -LE '$(SLOW_LABELS)'

test-slow: build-release
	ctest --preset release -L '$(SLOW_LABELS)'

# The Raft simulator over many seeds (3- and 5-node clusters).
SEEDS ?= 100000
sim-long: build-release
	./build/release/src/raft/capstan-sim --seeds $(SEEDS) --nodes 3
	./build/release/src/raft/capstan-sim --seeds $(SEEDS) --nodes 5

fuzz-build: deps
	cmake --preset fuzz
	cmake --build --preset fuzz -j $(JOBS)

# Runs every fuzz target for FUZZ_SECONDS each, starting from the seed corpus.
FUZZ_SECONDS ?= 60
fuzz: fuzz-build
	./fuzz/run-all.sh build/fuzz $(FUZZ_SECONDS)

format:
	git ls-files '*.cc' '*.h' | xargs clang-format -i

clean:
	rm -rf build
