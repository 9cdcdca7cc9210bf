# The two commands: `make demo` runs the main job on the embedded default; `make test` runs every test.
.PHONY: demo test unit lint bench bench-check lab-up lab-down

demo:
	./scripts/bootstrap --with-system
	.venv/bin/python -m lab demo

test:
	./scripts/bootstrap --with-system
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/pytest -q

unit:
	./scripts/bootstrap
	.venv/bin/pytest -q -m unit

lint:
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench:
	./scripts/bootstrap
	.venv/bin/pip install -q -e '.[bench]'
	.venv/bin/python -m bench

bench-check:
	./scripts/bootstrap --with-system
	.venv/bin/pytest -q -m bench

lab-up:
	./scripts/bootstrap --with-system
	.venv/bin/python -m lab up

lab-down:
	HOTSWAP_HOME=$${HOTSWAP_LAB_DIR:-/tmp/hotswap-lab}/demo-home .venv/bin/hotswap down
	.venv/bin/python -m lab down
