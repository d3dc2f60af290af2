"""The throughput benchmarks: views and training steps per second (``docs/results.md``'s cost
tables). Not shipped with the package; run them from the repository root as modules, e.g.
``python -m benchmarks.env_throughput``."""
