"""Tests of webapp/access: devices, PINs, signed cookies."""
