"""Tests of webapp/engage: the client's exact HTTP contract, and its conformance with Engage's
documentation."""
