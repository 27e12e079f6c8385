"""`python -m cluster.simulate`: the routing-policy simulator (cluster/simulate/simulator.py)."""

from cluster.simulate.simulator import main

main()
