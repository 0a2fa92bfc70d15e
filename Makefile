# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
.PHONY: demo test build fuzz interop-tools clean bench hellobench

demo:
	scripts/setup.sh
	scripts/demo.sh

test:
	scripts/setup.sh
	@# The Python rootfs for PythonRootfsMountTests, debootstrapped once and cached (the test fails without it).
	scripts/python-rootfs.sh || echo "make test: no Python rootfs tar; PythonRootfsMountTests will fail and say why"
	scripts/fuzz.sh 60
	swift build --build-tests
	swift test

build:
	scripts/setup.sh
	swift build

fuzz:
	scripts/setup.sh
	scripts/fuzz.sh 600

clean:
	rm -rf .build .build-fuzz

# Side-by-side benchmark against the Go reference (Benchmarks/README.md). BENCH_ARGS=--quick for one run.
bench:
	scripts/setup.sh
	python3 Benchmarks/sidebyside.py $(BENCH_ARGS)

# Cold-start benchmark: containerd + runc, ours vs the reference Stargz Snapshotter (Benchmarks/README.md).
# HELLOBENCH_ARGS=--quick for one repetition.
hellobench:
	scripts/setup.sh
	python3 Benchmarks/hellobench.py $(HELLOBENCH_ARGS)
