"""`make bench`: throughput, latency and memory measurements (never run as timed tests)."""
