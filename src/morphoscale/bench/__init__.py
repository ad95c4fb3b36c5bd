"""Benchmarks of a map: how well it recovers known biology, and the field's other metrics."""
