"""Throughput benchmarks (``sac-glam bench ...``)."""
