"""`make bench`: the load generator, the baseline server and the runner that puts every figure side by side."""
