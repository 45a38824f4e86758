#!/usr/bin/env bash
# The thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads): egress_inspect_path.sh
# run on it, so a value in a request path answers the same checks there.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_inspect_path.sh"
