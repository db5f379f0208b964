"""Load scripts for Switchboard. Run ``python -m benchmarks --help``."""
