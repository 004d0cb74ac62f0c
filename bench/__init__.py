"""Benchmarks of regcred: each module runs with ``python3 -m bench.<name> [--smoke]``; see bench/README.md."""
