"""Benchmarks for streamer: `python -m bench` (harness), `python -m bench.load` (load mode)."""
