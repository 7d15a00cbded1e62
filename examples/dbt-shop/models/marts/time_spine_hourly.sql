-- MetricFlow needs a time spine to parse the semantic layer; kpi-monitor does not use it.
select cast(range as timestamp) as date_hour
from range(timestamp '2024-01-01', timestamp '2030-01-01', interval 1 hour)
