"""Where a job runs: this machine or a Ray cluster, behind one interface (base.Executor).

Nothing here imports Qt or torch: the Ray executor talks to the cluster's Jobs REST API with httpx
and a WebSocket client, and the training code itself only runs on the cluster.
"""
