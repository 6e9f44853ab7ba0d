# The two commands a newcomer runs: `make demo` and `make test`.
.PHONY: demo test bench setup build try-aws try-slurm

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

# The AWS Batch backend on this machine, through moto (see config/examples/aws-moto.toml).
try-aws:
	bash scripts/aws-moto.sh try

# The Slurm backend on a one-node Slurm cluster on this machine (see config/examples/slurm.toml).
try-slurm:
	bash scripts/slurm.sh try
