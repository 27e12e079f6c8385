"""Benchmark: the most prompts per second an encoder variant could score on this machine, from its matrix multiplies
alone. Prints numbers; not a test.

An encoder layer's six weight matrices (Q, K, V, attention output, FFN up and down: 4·H² + 2·H·I multiply-adds per
token) are chained in one ONNX graph with MiniLM's shapes, as fp32 or int8 per channel exactly as the router's int8
graphs are quantised, and run by onnxruntime with the router's threads on one batch of tokens (BATCH prompts of the
sample's mean length). The fastest of several timed rounds gives the seconds one token spends in one layer's
weights; times the variant's layers and the mean token count of the router's fixed cost sample (what
`router.training.evaluate.scoring_cost` times), that is a lower bound on a prompt's scoring time. Attention scores, layer
norms, GELU, pooling, padding, the heads and the kNN vote only add to it, so no runtime or batching trick beats
`ceiling_prompts_s`. Variants are `cluster.bench.scorer`'s `layers:tokens:fp32|int8`.

    python -m cluster.bench.scorer_ceiling --out docs/benchmarks/scorer_ceiling.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from router.training import data
from router.encoder import BATCH, THREADS, onnx_session, wordpiece_tokenizer
from router.training.evaluate import cost_sample
from router.sources import encoder_dir

VARIANTS = ("6:128:fp32", "6:128:int8", "2:32:int8")
TARGET = 2000  # prompts/s, the router issue's batched scoring goal


def layer_matmul_graph(workdir: Path, hidden: int, intermediate: int, quantized: bool) -> Path:
    """One encoder layer's weight multiplies, chained (x·Q·K·V·O·Up·Down), random weights, written under `workdir`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    shapes = [(hidden, hidden)] * 4 + [(hidden, intermediate), (intermediate, hidden)]
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32), f"w{i}")
               for i, s in enumerate(shapes)]
    names = ["x"] + [f"h{i}" for i in range(len(shapes) - 1)] + ["y"]
    nodes = [helper.make_node("MatMul", [names[i], f"w{i}"], [names[i + 1]]) for i in range(len(shapes))]
    graph = helper.make_graph(nodes, "layer_matmuls", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", hidden])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", hidden])], weights)
    fp32 = workdir / "layer-fp32.onnx"
    # ir_version 8: onnx 1.23 writes IR 14 by default, which onnxruntime 1.31 refuses (it reads up to 13)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), fp32)
    if not quantized:
        return fp32
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8 = workdir / "layer-int8.onnx"
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True)  # as router.encoder.build_onnx
    return int8


def seconds_per_token_layer(graph: Path, rows: int, hidden: int, rounds: int = 7, runs: int = 20) -> float:
    """The fastest round's time for one token through the layer's multiplies, on a batch of `rows` tokens."""
    session = onnx_session(graph)
    x = np.random.default_rng(1).standard_normal((rows, hidden)).astype(np.float32)
    session.run(None, {"x": x})
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(runs):
            session.run(None, {"x": x})
        best = min(best, (time.perf_counter() - start) / runs)
    return best / rows


def mean_tokens(texts: list[str], window: int) -> float:
    """Mean WordPiece tokens per prompt ([CLS] and [SEP] included) under the encoder's window."""
    return statistics.fmean(len(e.ids) for e in wordpiece_tokenizer(window).encode_batch(texts))


def ceiling(variant: str, texts: list[str], hidden: int, intermediate: int, workdir: Path) -> dict:
    layers, window, weights = variant.split(":")
    if weights not in ("fp32", "int8"):
        raise SystemExit(f"{variant}: expected layers:tokens:fp32|int8")
    tokens = mean_tokens(texts, int(window))
    graph = layer_matmul_graph(workdir, hidden, intermediate, weights == "int8")
    per_token_layer = seconds_per_token_layer(graph, rows=round(BATCH * tokens), hidden=hidden)
    multiply_adds = 4 * hidden * hidden + 2 * hidden * intermediate
    return {"variant": variant, "mean_tokens": round(tokens, 1),
            "gmac_per_prompt": round(int(layers) * tokens * multiply_adds / 1e9, 3),
            "weight_gmac_s": round(multiply_adds / per_token_layer / 1e9, 1),
            "ceiling_prompts_s": round(1 / (int(layers) * tokens * per_token_layer))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated layers:tokens:fp32|int8")
    parser.add_argument("--out", type=Path, help="also write the JSON report here")
    args = parser.parse_args(argv)
    config = json.loads((encoder_dir() / "config.json").read_text())
    texts = cost_sample(data.load())
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [ceiling(v, texts, config["hidden_size"], config["intermediate_size"], Path(tmp)) for v in args.variants.split(",")]
    report = {"prompts": len(texts), "target_prompts_s": TARGET, "threads": THREADS, "cpu": os.cpu_count(),
              "load_avg_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}, "variants": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
