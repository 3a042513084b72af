"""What operations see: metrics (metrics), log lines (logs), health and readiness (health),
version (version), the edge that gives every response its headers and log line (web), and each
process's background threads (background). Imports only engage, store and i18n; what it needs
from above is handed in by the app factory."""
