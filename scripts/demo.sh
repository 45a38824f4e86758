#!/usr/bin/env bash
# The demo. Until the ingress proxy lands, it shows what exists: the CLI and config checking.
set -euo pipefail
build=${1:-build/release}
top=$(cd "$(dirname "$0")/.." && pwd)
bin="$build/cli/custos"
"$bin" version
echo
if [ -f "$top/conf/custos.example.yaml" ]; then
	"$bin" config check "$top/conf/custos.example.yaml"
fi
