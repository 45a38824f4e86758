#!/usr/bin/env bash
# The thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads): egress_inspect.sh run
# on it, so plain-HTTP response and request-body inspection answer the same checks there.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_inspect.sh"
