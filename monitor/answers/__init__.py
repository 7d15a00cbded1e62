"""Answers to alerts from Slack: buttons on every alert, clicks received over Socket Mode or
Slack's signed HTTP requests, checked, recorded once, and acted on (acknowledge, expected
change, false alarm, mute), with a precision figure per check.

``model`` [pure] what answers are and add up to; ``payload`` [pure] a click as Slack sends it;
``signing`` [pure] Slack's request signatures; ``records`` the answers in the state store;
``service`` [I/O] one click from check to effect; ``socket_mode`` the Socket Mode transport
(the HTTP one is ``POST /slack/interactivity``, ``monitor.api.slack``).
"""
