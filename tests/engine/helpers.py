"""Shared settings for engine tests against the in-memory source."""

FAST_RETRY = {"retry_base_delay": 0.001, "retry_max_delay": 0.01}
