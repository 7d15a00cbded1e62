"""The steps of a Slack delivery, one module per kind of message; ``slack_outbox.py`` runs them
and records each one's fate in the outbox.

- ``step``: ``Step``, one Slack call on behalf of outbox entries, and what follows it;
- ``alerts``: opened alerts: alone, grouped, or in a channel's storm summary; their charts follow;
- ``chart_uploads``: an alert's chart in its thread;
- ``resolutions``: the resolution's reply in the alert's thread, then the edit of the alert;
- ``answers``: the reply saying who answered an alert, then the edit that replaces its buttons;
- ``deployments``: a deployment report.
"""
