"""Benchmarks of kpi-monitor: detection quality (NAB corpus, KPI scenario suite) and speed."""
