# Ragline: `make run` starts the whole stack, `make test` runs every test.
# Both create the virtual environment in .venv and install the pinned requirements first.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PACKAGES := lib services/embedder services/retriever services/generator gateway
PROTOS := $(wildcard protos/ragline/v1/*.proto)

# llama.cpp builds from source here; a portable build, because the native one crashes in AMX kernels.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
# Models come from installed packages only; never from a hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: help setup run test test-unit fuzz lint protos lock bench bench-scale bench-haystack eval tune eval-followups eval-answers eval-models clean

help:
	@echo "make run    start PostgreSQL, Redis and the four services, and wait until all are healthy"
	@echo "            EMBEDDERS=2 RETRIEVERS=2 GENERATORS=2 GATEWAYS=2 run replicas of a service"
	@echo "            PG_STANDBY=1 adds a streaming standby of PostgreSQL that the retriever searches on"
	@echo "make test   run all tests (unit and integration); SVC=retriever runs tests/retriever only"
	@echo "make test-unit  the unit tests only: they start no process (about half a minute); SVC= works here too"
	@echo "make fuzz   fuzz every RPC against the running services, with thousands of examples"
	@echo "make bench  run every benchmark (benchmarks/bench_*.py): prints tables, writes bench-results/*.json"
	@echo "make bench-scale  vector, keyword and hybrid search at 1,000,000 chunks (CHUNKS=100000 for less)"
	@echo "make bench-haystack  cold Search beside a Haystack hybrid pipeline on Cranfield (makes .venv-haystack)"
	@echo "make eval   retrieval quality on every collection of ../shared/data through the real services"
	@echo "make tune   a grid over BM25, fusion, candidates, chunk size and grouping, by the mean nDCG@10"
	@echo "make eval-followups  follow-up questions in conversations on ../shared/data/squad-dev"
	@echo "make eval-answers  answer quality (EM, F1, citations, refusals) on ../shared/data/squad-dev per answer mode"
	@echo "make lint   ruff and mypy"
	@echo "make protos regenerate the gRPC stubs from protos/"

setup: $(STAMP)

# Every requirement is pinned in requirements.lock (a complete `pip freeze`), installed without
# resolution so that every machine gets the same versions; torch comes from the CPU wheel.
# The embedded PostgreSQL's pgvector is then rebuilt portably (the wheel's needs AVX-512).
$(STAMP): requirements.lock $(addsuffix /pyproject.toml,$(PACKAGES))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet --no-deps -r requirements.lock
	$(PIP) install --quiet --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES))
	$(PY) tools/build_pgvector.py
	touch $@

protos: $(STAMP)
	$(PY) tools/gen_protos.py

# EMBEDDERS=2 (RETRIEVERS, GENERATORS, GATEWAYS) runs that many replicas of a service.
# PG_STANDBY=1: the retrievers also search on a streaming standby of the embedded PostgreSQL.
run: $(STAMP)
	$(PY) -m ragline.devstack --embedders $(or $(EMBEDDERS),1) --retrievers $(or $(RETRIEVERS),1) \
		--generators $(or $(GENERATORS),1) --gateways $(or $(GATEWAYS),1) $(if $(filter 1,$(PG_STANDBY)),--pg-standby)

# SVC names one folder of tests/: embedder, retriever, generator, gateway, lib, e2e or fuzz.
TEST_PATHS := $(if $(SVC),tests/$(SVC))

test: $(STAMP)
	$(PY) -m pytest $(TEST_PATHS)

# Tests marked integration start processes (services, PostgreSQL, Valkey, tools); the rest start none.
test-unit: $(STAMP)
	$(PY) -m pytest -m "not integration" $(TEST_PATHS)

# The fuzz suite also runs in `make test`, with a few examples per RPC (profile ci).
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest tests/fuzz

bench: $(STAMP)
	@set -e; for b in $(filter-out benchmarks/bench_scale.py,$(wildcard benchmarks/bench_*.py)); do m=$${b%.py}; $(PY) -m $${m//\//.}; done

# One collection of 1,000,000 chunks (CHUNKS=100000 for a quicker run), not part of `make bench`.
bench-scale: $(STAMP)
	$(PY) -m benchmarks.bench_scale --chunks $(or $(CHUNKS),1000000)

# Haystack lives in its own environment: it is no dependency of Ragline's and must not move its pins.
HAYSTACK_VENV := .venv-haystack
$(HAYSTACK_VENV)/.installed:
	test -x $(HAYSTACK_VENV)/bin/python || $(PYTHON) -m venv $(HAYSTACK_VENV)
	$(HAYSTACK_VENV)/bin/pip install --quiet haystack-ai==3.4.1 sentence-transformers-haystack==2.0.0 \
		sentence-transformers==6.2.0 torch==2.13.0+cpu
	touch $@

bench-haystack: $(STAMP) $(HAYSTACK_VENV)/.installed
	$(PY) -m benchmarks.compare_haystack

eval: $(STAMP)
	$(PY) -m benchmarks.eval_retrieval

tune: $(STAMP)
	$(PY) -m benchmarks.tune_retrieval

# Follow-up questions on SQuAD dev: raw vs fallback rewrite vs conversation vs hand-written standalone.
eval-followups: $(STAMP)
	$(PY) -m benchmarks.eval_followups

# EVAL_QUESTIONS, EVAL_MODES, EVAL_SERVICES_FROM...: see benchmarks/eval_answers.py.
eval-answers: $(STAMP)
	$(PY) -m benchmarks.eval_answers

# The two local embedding models on every shared collection: EVAL_MODELS_* in benchmarks/eval_embedding_models.py.
eval-models: $(STAMP)
	$(PY) -m benchmarks.eval_embedding_models

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p ragline -p ragline_embedder -p ragline_retriever -p ragline_generator -p ragline_gateway -p benchmarks

lock: $(STAMP)
	{ sed -n '1,2p' requirements.lock; $(PIP) freeze --exclude-editable | grep -v -E '^(ragline|pip|setuptools|wheel)=='; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) $(HAYSTACK_VENV) .pytest_cache .mypy_cache .ruff_cache
