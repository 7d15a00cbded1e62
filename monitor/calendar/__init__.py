"""The checks' calendars: public holidays (local days of the check's time zone), events,
exclusion windows and ``learn_from``, and what the detector is told about each bucket.

``days`` says which bucket is which, ``marks`` what the detector does with it, ``detector``
runs a series' detector with those marks, ``config`` holds the config and API shapes.
"""
