"""Throughput benchmarks (``sac-glam bench ...``)."""


def print_rows(rows: list[tuple[str, str]]) -> None:
    """Print ``(name, value)`` rows as an aligned two-column table."""
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
