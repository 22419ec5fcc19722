"""Screens of the app: run, history, layers."""
