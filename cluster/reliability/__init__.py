"""Reliability: the fault-injection suite, the fuzzing and the soak, each accounted for by the "nothing lost" ledger."""
