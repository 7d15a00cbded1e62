"""The daemon's HTTP resources, one module each; ``monitor.server.Api`` routes requests to them
and owns what every request shares (authorization, body limits, errors, compression).

- ``http``: the answer (``Response``), the error that becomes one (``HttpError``) and the body
  helpers every resource uses;
- ``checks``: the checks and their controls (run, rebaseline, mute, alert history);
- ``events``: calendar events and exclusion windows recorded through the API;
- ``deployments``: dbt deployments to watch, and their reports;
- ``operations``: the daemon itself (health, readiness, metrics, undelivered notifications,
  reload);
- ``pages``: the read-only HTML pages;
- ``slack``: Slack's interactivity requests (answers to alerts).
"""
