"""Tests of webapp/ops and of the deployment: metrics, logs, the edge's headers, the run command,
nginx, systemd, hardening."""
