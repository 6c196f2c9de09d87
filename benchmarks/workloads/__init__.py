"""One module per workload; each exposes ``NAME``, ``TITLE`` and ``async def run(cfg)``."""
