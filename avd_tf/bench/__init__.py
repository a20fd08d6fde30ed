"""Throughput measurements printed by avd-bench (never asserted in tests)."""
