"""Outcome files in every shape the router trains from (router/training/outcomes.py), and malformed ones refused with
the row and the reason."""

import json
from pathlib import Path

import pytest

from router.training.outcomes import OutcomeFileError, read_outcomes

NINE_MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "llmrouter-9models" / "train.json"
ROUTELLM_MMLU = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "routellm" / "mmlu" / "mmlu_astronomy.csv"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_llmrouter_json_gives_fractional_scores_per_model(tmp_path: Path):
    rows = [{"question": "2+2?", "scores": {"a": 1.0, "b": 0.25}}, {"question": "capital?", "scores": {"a": 0, "c": None}}]
    outcomes = read_outcomes(write(tmp_path / "train.json", json.dumps(rows)))
    assert outcomes.prompts == ["2+2?", "capital?"] and outcomes.models == ["a", "b", "c"]
    assert outcomes.scores == {"a": [1.0, 0.0], "b": [0.25, None], "c": [None, None]}
    lines = write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert read_outcomes(lines) == outcomes  # the same rows one per line


def test_routellm_csv_keeps_the_model_columns_and_skips_text_columns(tmp_path: Path):
    path = write(tmp_path / "gsm8k.csv", 'prompt,weak,strong,weak_response,score\n'
                                         'p1,True,False,"It is 4.",0.5\np2,False,True,"No idea",\n')
    outcomes = read_outcomes(path)
    assert outcomes.prompts == ["p1", "p2"] and outcomes.models == ["weak", "strong", "score"]
    assert outcomes.scores == {"weak": [1.0, 0.0], "strong": [0.0, 1.0], "score": [0.5, None]}


def test_our_label_output_reads_as_a_csv_matrix(tmp_path: Path):
    """`python -m router label` writes prompt, source, domain, then one True/False column per specialist."""
    path = write(tmp_path / "local.csv", "prompt,source,domain,qwen-coder-1.5b,smollm2-135m\nq,gsm8k,math,True,False\n")
    assert read_outcomes(path).scores == {"qwen-coder-1.5b": [1.0], "smollm2-135m": [0.0]}


@pytest.mark.skipif(not NINE_MODELS.exists(), reason="../shared/data not present")
def test_the_nine_model_training_split_and_routellm_files_read_whole():
    nine = read_outcomes(NINE_MODELS)
    assert len(nine.prompts) == 5608 and len(nine.models) == 9
    assert all(v is not None and 0 <= v <= 1 for column in nine.scores.values() for v in column)
    mmlu = read_outcomes(ROUTELLM_MMLU)
    assert mmlu.models == ["mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"]


@pytest.mark.parametrize(("name", "text", "error"), [
    ("bad.json", "{not json", r"bad.json: not JSON"),
    ("obj.json", '{"question": "q", "scores": {"a": 1}}', r"expected a JSON list"),
    ("noq.json", '[{"question": "q", "scores": {"a": 1}}, {"scores": {"a": 1}}]', r"row 1: needs a non-empty string `question`"),
    ("range.json", '[{"question": "q", "scores": {"a": 1.5}}]', r"row 0: score 1.5 is not a number in \[0, 1\]"),
    ("word.json", '[{"question": "q", "scores": {"a": "yes"}}]', r"row 0: .*could not convert|row 0: .*'yes'"),
    ("range.csv", "prompt,a\np,0.5\nq,2\n", r"range.csv:3: score 2.0 is not a number in \[0, 1\]"),
    ("empty.csv", "prompt,a\n,True\n", r"empty.csv:2: empty `prompt`"),
    ("nomodels.csv", "prompt,source\np,gsm8k\n", r"no model columns"),
    ("noprompt.csv", "question,a\np,True\n", r"a `prompt` column"),
    ("judged.jsonl", '{"prompt": "p", "model": "a", "correct": true}\n{"prompt": "p", "model": "a", "correct": "no"}\n',
     r"judged.jsonl:2: a judged line needs"),
    ("lines.jsonl", '{"question": "q", "scores": {"a": 1}}\nnot json\n', r"lines.jsonl:2: not JSON"),
    ("outcomes.txt", "prompt,a\n", r"unknown outcome file type"),
])
def test_a_malformed_file_is_refused_with_its_row_and_reason(tmp_path: Path, name: str, text: str, error: str):
    with pytest.raises(OutcomeFileError, match=error):
        read_outcomes(write(tmp_path / name, text))
