"""Helpers of the differential fuzzing suite (tests/test_fuzz.py): strategies and live references."""
