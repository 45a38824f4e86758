# custos: the two-command quick start. `make demo` runs the demo, `make test` the test suite.
# Both install what they need (scripts/deps.sh), configure with CMake and build.
JOBS ?= $(shell nproc)
BUILD_TEST ?= build/test
BUILD_REL ?= build/release
BUILD_FUZZ ?= build/fuzz
BUILD_CLANG ?= build/clang

.PHONY: all deps build demo test test-clang lint fuzz clean format bench bench-proxy bench-sandbox bench-audit

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

# The unit tests alone, built with clang's ASan+UBSan (CI runs it beside `make test`): clang's
# UBSan also reports arithmetic on a null pointer (NULL + 0), which gcc's lets pass.
test-clang: deps
	CC=clang cmake -S . -B $(BUILD_CLANG) -DCMAKE_BUILD_TYPE=Debug -DCUSTOS_SANITIZE=ON >/dev/null
	cmake --build $(BUILD_CLANG) -j$(JOBS) --target unit_tests
	cd $(BUILD_CLANG) && ctest --output-on-failure -j$(JOBS) --timeout 300 -R '^unit/'

demo: build
	bash scripts/demo.sh $(BUILD_REL)

# custos beside nginx and HAProxy (installs nginx-light, haproxy, wrk); figures in PERFORMANCE.md.
bench-proxy: build
	bash bench/proxy/run.sh $(BUILD_REL)

lint:
	bash scripts/lint.sh all

format:
	bash scripts/lint.sh list | xargs clang-format -i

# libFuzzer targets, built with clang; FUZZ_SECONDS each (CI runs them briefly).
FUZZ_SECONDS ?= 30
fuzz: deps
	CC=clang cmake -S . -B $(BUILD_FUZZ) -DCMAKE_BUILD_TYPE=Debug -DCUSTOS_FUZZ=ON >/dev/null
	cmake --build $(BUILD_FUZZ) -j$(JOBS) --target fuzz_targets
	bash scripts/fuzz.sh $(BUILD_FUZZ) $(FUZZ_SECONDS)

# Audit writer and syslog/TLS sink against the raw disk limit (bench/audit; ~3 minutes).
bench-audit: deps
	cmake -S . -B $(BUILD_REL) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD_REL) -j$(JOBS) --target audit-load
	bash bench/audit/run.sh $(BUILD_REL)

clean:
	rm -rf build

# Benchmarks: `make bench-<area>` runs bench/<area>/run.sh (policy, audit, proxy, sandbox,
# egress, inspect, vm), side by side with the peers it names; figures go to docs/PERFORMANCE.md.
# Each script installs its peers itself; none runs in `make test`.
bench-%: deps
	bash bench/$*/run.sh $(BUILD_REL)

bench: $(patsubst bench/%/run.sh,bench-%,$(wildcard bench/*/run.sh))
