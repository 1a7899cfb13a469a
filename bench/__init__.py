"""Reproducible benchmarks, each run as `python -m bench.<name>`.

Each starts what it needs (a throwaway deployment or a scratch database), prints its figures
for a human and, as its last line, one JSON object; each cleans up everything it started.
Benchmarks report; they do not assert.
"""
