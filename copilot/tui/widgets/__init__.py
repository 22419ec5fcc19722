"""Widgets of the app: charts, diagnosis, proposal, log."""
