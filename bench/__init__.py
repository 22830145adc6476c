"""Benchmarks: chatlane side by side with its peer libraries (`make bench`)."""
