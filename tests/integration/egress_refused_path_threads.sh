#!/usr/bin/env bash
# The thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads): egress_refused_path.sh
# run on it, so a call refused before its path was inspected is audited masked there too.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_refused_path.sh"
