"""funcsplit's benchmarks: each case beside its hand-written baseline.

Run ``python benchmarks/run.py [--quick | --tiny] [--out DIR]``.
"""
