# SPDX-License-Identifier: GPL-2.0-or-later
# Shortcuts for developers; scripts/setup and scripts/test are the real thing.
PY = .venv/bin/python

setup:
	bash scripts/setup

test:
	bash scripts/test

test-quick:
	bash scripts/test -m "not vm"

lint:
	.venv/bin/ruff check kexecd tests bench testbed
	.venv/bin/ruff format --check kexecd tests bench testbed
	.venv/bin/mypy
	$(MAKE) -C csrc check

demo:
	$(PY) -m tests.vm.demo

bench:
	$(PY) -m bench.run_all

captures:
	$(PY) -m tests.vm.captures tests/data
	$(PY) -m tests.vm.captures --set 5.10-2.0.20 tests/data
	$(PY) -m tests.vm.captures --set 6.12-2.0.29-c tests/data

# Every fuzz target for FUZZ_SECONDS each (scripts/fuzz; see docs/testing.md, Fuzzing).
FUZZ_SECONDS = 60
fuzz:
	bash scripts/fuzz $(FUZZ_SECONDS)

clean:
	$(MAKE) -C csrc clean
	rm -rf build *.egg-info kexecd/_core*.so

.PHONY: setup test test-quick lint demo bench captures fuzz clean
