"""Continuous batching: requests, the waiting queue's policy, prefix caches and the loop."""
