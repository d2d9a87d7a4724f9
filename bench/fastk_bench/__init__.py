"""FastK comparison benchmark: the same data, the same machine, the same run.

Layout:
- `dataset`: the deterministic synthetic dataset (seeded random walks, uniform scalar)
- `timing`: clocks, percentiles, time-boxed loops
- `procs`: starting and stopping the servers this harness owns (loopback only)
- `systems`: one adapter per system (FastK over Flight and HTTP, ArcticDB, DuckDB,
  Polars, PostgreSQL, ROAPI, the in-memory Flight ceiling, FastK's SQL clients),
  all with the same methods
- `ceiling_server`: the minimal pyarrow.flight server holding the batches in RAM
- `workloads`: the six workloads, the HTTP load and Flight transport runs, the
  three SQL workloads (SQL vs native reads, a 1h resample against DuckDB and ROAPI),
  and `colocated` (workload 2's year over FastK's Flight Unix socket, loopback TCP
  and ArcticDB in process)
- `market`: the market-query workloads (resample on read, the as-of cross section of
  thousands of series, coverage and gaps), docs/market-queries.md
- `tls`: workload 2's year into Polars over plain Flight and over Flight with TLS, one
  store served plain and with TLS in turn (`--only tls`), reporting TLS / plain
- `report`: results.json, PNG charts and the tables of docs/benchmarks.md
- `__main__`: `python -m fastk_bench [--quick] [--only market,colocated,tls]`, the driver
"""
