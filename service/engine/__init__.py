"""Scheduling and batching: continuous decode batching of Generate streams, dynamic batching of Classify texts."""
