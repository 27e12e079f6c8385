"""`python -m cluster.loadtest`: the open-loop load test (cluster/loadtest/run.py)."""

from cluster.loadtest.run import main

main()
