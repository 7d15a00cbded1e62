"""``python -m monitor.detection``: compile the detection kernels into the cache now (a container
image does it at build time)."""

from monitor.detection.compiled import compile_all

print(f"detection kernels compiled into {compile_all()}")
