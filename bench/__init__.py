"""LabManager's benchmarks (docs/performance.md), each a module run from the repository root:

    .venv/bin/python -m bench.<name> [options]      # e.g. bench.sessions; `make bench` runs them all

bench.common is their harness (server start-up, bounded load loops, CPU readings, percentiles, report tables);
bench.urls is the ROOT_URLCONF of bench.list_instances.
"""
