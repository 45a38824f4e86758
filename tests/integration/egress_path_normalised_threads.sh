#!/usr/bin/env bash
# The thread-per-connection forward path (CUSTOS_EGRESS_FORWARD=threads): egress_path_normalised.sh
# run on it, so a data source gets the path the policy judged there too.
exec env CUSTOS_EGRESS_FORWARD=threads bash "${CUSTOS_SRC:?}/tests/integration/egress_path_normalised.sh"
