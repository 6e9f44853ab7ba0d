# The two commands a newcomer runs: `make demo` and `make test`.
.PHONY: demo test bench soak setup build try-aws try-slurm try-azure try-gcp fuzz

# KEEP=1 keeps the service (and its dashboard at /ui) running after the demo, until Ctrl-C.
demo:
	KEEP=$(KEEP) bash scripts/demo.sh

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

# The Azure Batch backend on this machine: Azurite and a stand-in Batch server (see
# config/examples/azure-local.toml).
try-azure:
	bash scripts/azure-local.sh try

# The Google Batch backend against fake-gcs-server and a stand-in Batch server on this machine
# (see config/examples/gcp-local.toml).
try-gcp:
	bash scripts/gcp-local.sh try

# The Slurm backend on a one-node Slurm cluster on this machine (see config/examples/slurm.toml).
try-slurm:
	bash scripts/slurm.sh try

# The API contract test, longer: schemathesis with many more cases and a random seed.
fuzz:
	bash scripts/setup.sh && bash scripts/test-deps.sh && BRIZO_SCHEMATHESIS_EXAMPLES=500 BRIZO_SCHEMATHESIS_SEED=$$RANDOM cargo test --locked --test schemathesis -- --nocapture

# make bench's throughput and memory figures, then a 5,000-job soak printing memory every 500.
soak:
	bash scripts/setup.sh && BRIZO_SOAK_JOBS=5000 cargo bench --locked --bench throughput
