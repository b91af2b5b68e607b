# The two commands of the README's quick start, plus a few conveniences.
.PHONY: demo test setup lint unit up down bench

setup:
	bash scripts/bootstrap.sh

## Run the product on this machine: local S3 + Ray + CPU models, the sample batch over gRPC, reports, summary.
demo: setup
	.venv/bin/callqc demo

## Run every test: unit, integration (real S3 server, Ray Serve, gRPC socket, whisper) and end-to-end.
test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m pytest

unit: setup
	.venv/bin/python -m pytest tests/unit

lint: setup
	.venv/bin/ruff check .

up: setup
	.venv/bin/callqc up

down:
	.venv/bin/callqc down

bench: setup
	.venv/bin/python perf/bench_rules.py
