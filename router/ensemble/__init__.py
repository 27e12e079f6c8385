"""Routed ensembles: several specialists answer one request together (docs/ensembles.md).

Pure Python, no Ray: `run` drives a mode through a `Caller` that serve/ supplies, so every mode can be tested on
recorded replies. `spec` parses what a request asks for, `modes` holds one class per mode, `judging` turns
logprobs and judgements into scores, `answers` extracts final answers for voting, `prompts` writes the extra
turns the modes add, `budget` keeps the total tokens under the request's cap.
"""
