#!/usr/bin/env bash
# egress_inspect_head.sh on the thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads):
# answers without a body under response inspection pass the same there.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_inspect_head.sh"
