"""The daemon's own read-only pages: the overview (``/``), a check (``/checks/{name}``) and the
deployments (``/deployments``, ``/deployments/{id}``), server-rendered HTML with inline SVG.

:mod:`.collect` reads the running daemon, :mod:`.model` holds the plain data, :mod:`.svg` and
:mod:`.render` draw it.
"""
