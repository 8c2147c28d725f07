"""The scenarios of `make bench`, grouped by what they measure; each module measures, and writes its part of the
report: throughput (a)-(f), propagation (g), revocations (h), defaults (`authsvc serve` as `make run` starts it),
memory (m)."""
