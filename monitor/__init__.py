"""kpi-monitor: watch business KPIs in the warehouse and say when they move unexpectedly."""

__version__ = "0.1.0"
