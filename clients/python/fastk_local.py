"""Former name of `fastk.local`, the co-located zero-copy reads (docs/flight.md,
"Co-located reads"); kept so `import fastk_local` goes on working.

This file makes `fastk_local` the very module `fastk.local` (not a copy of its names),
so patching `fastk_local.plan` patches what `fastk_local.read_table` calls. It finds
the package installed (`pip install ./clients/python`) or, run from a checkout with
`clients/python` on `sys.path`, next to this file.
"""

from __future__ import annotations

import sys

from fastk import local as _local

sys.modules[__name__] = _local
