"""asynctg's benchmarks: ``python -m bench --help``."""
