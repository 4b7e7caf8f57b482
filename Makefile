# The two commands a fresh machine needs (see README.md):
#   make demo   - local two-node cluster on SQLite, the example daily pipeline, a failover to watch
#   make test   - install what the tests need (Debian packages, .venv) and run the whole suite
.PHONY: demo test lint bench

demo:
	@./scripts/setup-venv.sh
	.venv/bin/luigi-ha demo

test:
	@./scripts/setup-machine.sh
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q -p no:cacheprovider -ra

lint:
	.venv/bin/ruff check .

bench:
	@./scripts/setup-venv.sh test
	.venv/bin/python bench/throughput.py
