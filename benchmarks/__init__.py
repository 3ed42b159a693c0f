"""`make bench`: throughput, latency and memory measurements.

Never timed by the tests; tests/benchmarks runs each one at smoke size (``smoke=True``) to check it works.
"""
