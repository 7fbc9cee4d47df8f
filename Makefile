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
	.venv/bin/ruff check kexecd tests
	.venv/bin/ruff format --check kexecd tests
	.venv/bin/mypy
	$(MAKE) -C csrc check

demo:
	$(PY) -m tests.vm.demo

captures:
	$(PY) -m tests.vm.captures tests/data

clean:
	$(MAKE) -C csrc clean
	rm -rf build *.egg-info kexecd/_core*.so

.PHONY: setup test test-quick lint demo captures clean
