"""Benchmarks for streamer: see bench/README.md."""
