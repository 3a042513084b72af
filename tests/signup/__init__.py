"""Tests of webapp/signup: the form, the flow against Engage, the submission, consent records, the
outbox."""
