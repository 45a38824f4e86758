#!/usr/bin/env bash
# The thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads):
# egress_refusals_audited.sh run on it, so its refusals are audited there too.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_refusals_audited.sh"
