"""Engine start-up hooks (ray.serve.llm's CallbackBase): cut what a new replica does before it can serve."""

from __future__ import annotations

from ray.llm._internal.common.callbacks.base import CallbackBase


class PreparedWeightsCallback(CallbackBase):
    """Skip Ray's per-node "download model files" task for weights `prepare` already wrote to local disk.

    That task starts a fresh Ray worker process (~10 s of imports on 2 cores) only to find the folder is there;
    a scale-up waits on it. The weights of every prepared profile are on the node's disk by construction.
    """

    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False
