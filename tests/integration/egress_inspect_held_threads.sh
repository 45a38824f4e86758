#!/usr/bin/env bash
# egress_inspect_held.sh on the thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads):
# the bounds on held inspection bodies answer the same there.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_inspect_held.sh"
