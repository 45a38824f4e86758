#!/usr/bin/env bash
# The thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads): egress_inspect_decode.sh
# run on it, so multipart bodies, query strings and form responses answer the same checks there.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_inspect_decode.sh"
