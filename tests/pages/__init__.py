"""Tests of webapp/pages: the till's and the kiosk's pages, the phone's, setup, the manager's view,
and what only a browser shows."""
