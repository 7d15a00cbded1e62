"""Alerting: the episode state machine, notifications and the channels that deliver them."""
