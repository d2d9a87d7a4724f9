"""The loopback ceiling: a minimal pyarrow.flight server holding the batches in RAM.

`python -m fastk_bench.ceiling_server PORT DATA_DIR` loads `DATA_DIR/kline/*.arrow`,
`DATA_DIR/scalar.arrow` and `DATA_DIR/ticks/*.arrow` (Arrow IPC files the driver writes;
each may be absent) into memory, cut into
batches of 44,640 rows (FastK sends one batch per month chunk of 1m data, at most
31 x 1440 rows), and answers the same JSON tickets as
FastK (`kind`, `symbol`, `start_ts`, `end_ts`, `latest`) with zero-copy slices of
those batches. It does no storage work at all, so its DoGet rate is the transport's
(gRPC + Arrow IPC over loopback + the pyarrow client) ceiling on this machine.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight

BATCH_ROWS = 44_640  # the same batch sizes as FastK's month chunks of 1m bars


class Ceiling(flight.FlightServerBase):
    def __init__(self, location: str, data: pathlib.Path):
        # Load before the base class binds: it serves as soon as it is initialized.
        self.tables: dict[str, pa.Table] = {}
        self.ts: dict[str, np.ndarray] = {}
        for path in sorted((data / "ticks").glob("*.arrow")):
            # Tick answers (the `ticks` workload) keep the batches they were written in:
            # FastK's own answer batches, so both servers send the same messages.
            with pa.OSFile(str(path)) as src:
                self.tables[f"trade:{path.stem}"] = pa.ipc.open_file(src).read_all()
        scalar = [data / "scalar.arrow"] if (data / "scalar.arrow").exists() else []
        for path in sorted((data / "kline").glob("*.arrow")) + scalar:
            with pa.memory_map(str(path)) as src:
                # Read into process memory (not a mapping) so nothing touches the disk.
                table = pa.ipc.open_file(src).read_all().combine_chunks()
            table = pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS))
            self.tables[path.stem] = table
            self.ts[path.stem] = table.column("ts").cast(pa.int64()).to_numpy()
        super().__init__(location)

    def do_get(self, context, ticket):
        t = json.loads(ticket.ticket)
        if t["kind"] == "trade":
            return flight.RecordBatchStream(self.tables[f"trade:{t['symbol']}"])
        name = t["symbol"] if t["kind"] == "kline" else "scalar"
        table, ts = self.tables[name], self.ts[name]
        lo = 0 if t.get("start_ts") is None else int(np.searchsorted(ts, t["start_ts"], "left"))
        hi = len(ts) if t.get("end_ts") is None else int(np.searchsorted(ts, t["end_ts"], "right"))
        if t.get("latest") is not None:
            lo = max(lo, hi - int(t["latest"]))
        return flight.RecordBatchStream(table.slice(lo, hi - lo))


def main() -> int:
    port, data = int(sys.argv[1]), pathlib.Path(sys.argv[2])
    server = Ceiling(f"grpc://127.0.0.1:{port}", data)
    print(f"ceiling listening on 127.0.0.1:{port}", flush=True)
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
