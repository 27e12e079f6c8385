"""Cold-start phases read back from a Ray session's logs (lines copied from a real local-profile scale-up)."""

import json

from cluster.bench.replica_starts import main, phases

CONTROLLER = """\
INFO 2026-11-23 15:23:55,628 controller 24859 -- Starting Replica(id='ovhjzzxg', deployment='LLMServer:smollm2-135m', app='specialists').
INFO 2026-11-23 15:23:56,001 controller 24859 -- Starting Replica(id='stillup1', deployment='LLMServer:qwen-coder-0.5b', app='specialists').
INFO 2026-11-23 15:25:29,553 controller 24859 -- Replica(id='ovhjzzxg', deployment='LLMServer:smollm2-135m', app='specialists') started successfully on node '057a' after 93.9s (PID: 29312).
"""
REPLICA = "INFO 2026-11-23 15:24:21,815 specialists_LLMServer:smollm2-135m ovhjzzxg -- Started initializing replica.\n"
ACTOR_ERR = """\
INFO 2026-11-23 15:24:25,189 specialists_LLMServer:smollm2-135m ovhjzzxg -- Using executor class: <class 'vllm.v1.executor.multiproc_executor.MultiprocExecutor'>
INFO 2026-11-23 15:25:27,527 specialists_LLMServer:smollm2-135m ovhjzzxg -- Started vLLM engine.
"""
ACTOR_OUT = """\
(EngineCore pid=29720) INFO 11-23 15:24:49 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: model='smollm2-135m'
(Worker pid=29970) INFO 11-23 15:25:10 [cpu_model_runner.py:68] Starting to load model /models/smollm2-135m...
(Worker pid=29970) INFO 11-23 15:25:16 [default_loader.py:501] Loading weights took 4.85 seconds
(EngineCore pid=29720) INFO 11-23 15:25:23 [core.py:402] init engine (profile, create kv cache, warmup model) took 2.51 s
"""


def session_logs(tmp_path):
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "controller_24859.log").write_text(CONTROLLER)
    (tmp_path / "serve" / "replica_specialists_LLMServer_smollm2-135m_ovhjzzxg.log").write_text(REPLICA)
    (tmp_path / "worker-f487-01000000-29312.err").write_text(ACTOR_ERR)
    (tmp_path / "worker-f487-01000000-29312.out").write_text(ACTOR_OUT)
    return tmp_path


def test_each_phase_of_a_replica_start_is_timed_from_its_logs(tmp_path):
    started, still_starting = phases(session_logs(tmp_path))
    assert started == {
        "replica": "ovhjzzxg", "specialist": "smollm2-135m", "started_at": "2026-11-23T15:23:55",
        "process": 26.2, "vllm_import": 3.4, "engine_core": 23.8, "worker": 21.0, "weights": 6.0,
        "kv_warmup": 7.0, "handshake": 4.5, "healthy": 2.0, "total": 93.9,
    }
    assert still_starting["specialist"] == "qwen-coder-0.5b" and "total" not in still_starting


def test_cli_filters_by_specialist(tmp_path, capsys):
    main(["--logs", str(session_logs(tmp_path)), "--deployment", "smollm2-135m", "--json"])
    assert [row["replica"] for row in json.loads(capsys.readouterr().out)] == ["ovhjzzxg"]
