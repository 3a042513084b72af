"""Tests of webapp/simulator: the Engage simulator's own contract."""
