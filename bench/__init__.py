"""The reproducible comparison of streamfn with its peers (see BENCHMARKS.md)."""
