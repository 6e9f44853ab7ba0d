# The two commands a newcomer runs: `make demo` and `make test`.
.PHONY: demo test bench setup build

demo:
	bash scripts/demo.sh

test:
	bash scripts/test.sh

bench:
	bash scripts/bench.sh

setup:
	bash scripts/setup.sh

build:
	cargo build --locked
