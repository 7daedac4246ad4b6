"""Hardware cost of a built model: params, FLOPs, CPU latency, peak memory."""
