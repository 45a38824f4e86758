# custos: the two-command quick start. `make demo` runs the demo, `make test` the test suite.
# Both install what they need (scripts/deps.sh), configure with CMake and build.
JOBS ?= $(shell nproc)
BUILD_TEST ?= build/test
BUILD_REL ?= build/release
BUILD_FUZZ ?= build/fuzz

.PHONY: all deps build demo test lint fuzz clean format

all: build

deps:
	@bash scripts/deps.sh

build: deps
	cmake -S . -B $(BUILD_REL) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD_REL) -j$(JOBS)

# Debug build with ASan+UBSan; every unit, integration and lint test through CTest.
test: deps
	cmake -S . -B $(BUILD_TEST) -DCMAKE_BUILD_TYPE=Debug -DCUSTOS_SANITIZE=ON >/dev/null
	cmake --build $(BUILD_TEST) -j$(JOBS)
	cd $(BUILD_TEST) && ctest --output-on-failure -j$(JOBS) --timeout 900

demo: build
	bash scripts/demo.sh $(BUILD_REL)

lint:
	bash scripts/lint.sh all

format:
	bash scripts/lint.sh list | xargs clang-format -i

# libFuzzer targets, built with clang; FUZZ_SECONDS each (CI runs them briefly).
FUZZ_SECONDS ?= 30
fuzz: deps
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DCUSTOS_FUZZ=ON >/dev/null
	cmake --build $(BUILD_FUZZ) -j$(JOBS)
	bash scripts/fuzz.sh $(BUILD_FUZZ) $(FUZZ_SECONDS)

clean:
	rm -rf build

# Content inspection throughput (bench/inspect; figures in docs/PERFORMANCE.md): Hyperscan vs
# PCRE2 JIT over 1 MiB of mixed text, SSE cost per event, JSON pass. About a minute.
BENCH_INSPECT_REPS ?= 10
.PHONY: bench-inspect
bench-inspect: deps
	cmake -S . -B $(BUILD_REL) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD_REL) -j$(JOBS) --target custos_policy
	mkdir -p bench/out
	$(CC) -std=gnu17 -O2 -Wall -Wextra -Iinclude -Ipolicy -I$(BUILD_REL)/generated \
		bench/inspect/bench_inspect.c -o $(BUILD_REL)/bench_inspect \
		$(BUILD_REL)/policy/libcustos_policy.a $(BUILD_REL)/core/libcustos_core.a \
		$$(pkg-config --libs libhs libpcre2-8 yaml-0.1 openssl) -lpthread
	$(BUILD_REL)/bench_inspect $(BENCH_INSPECT_REPS) bench/out/inspect.jsonl
