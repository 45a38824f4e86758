#!/usr/bin/env bash
# Lint checks that fail `make test`: clang-format conformance and banned C calls.
#   lint.sh format   clang-format --dry-run -Werror over every C source and header
#   lint.sh banned   grep for calls STYLE.md bans (string functions without bounds, atoi...)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

# Sources under version control or about to be; build trees and fetched peers are excluded.
mapfile -t files < <(find core policy audit sandbox proxy cli include tests bench \
	-type f \( -name '*.c' -o -name '*.h' \) -not -path '*/corpus/*' 2>/dev/null | sort)

run_format() {
	fmt=$(command -v clang-format-14 || command -v clang-format || true)
	if [ -z "$fmt" ]; then
		echo "lint: clang-format not found (scripts/deps.sh installs it)" >&2
		exit 1
	fi
	if ! "$fmt" --dry-run -Werror "${files[@]}"; then
		echo "lint: formatting differs; run: clang-format -i <file>" >&2
		exit 1
	fi
	echo "lint: format ok (${#files[@]} files)"
}

run_banned() {
	# Word-boundary match on a call: name followed by '('. Comments may mention them.
	pattern='\b(strcpy|strcat|sprintf|vsprintf|gets|atoi|atol|atoll|strtok|strncpy|strncat)[[:space:]]*\('
	bad=$(grep -nE "$pattern" "${files[@]}" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/?\*|//)' || true)
	# memcmp on secrets: comparisons of keys, digests, MACs and tokens go through CRYPTO_memcmp.
	# An identifier that names a secret ends in one of these words (lower case: constants such as
	# AUDIT_HASH_KEY name public JSON field names, not secrets; key_id is public).
	secret=$(grep -nE '\bmemcmp[[:space:]]*\([^;]*[a-z0-9_]*(key|secret|token|hmac|mac|digest|password|passwd|sig|signature|tag)\b' \
		"${files[@]}" || true)
	if [ -n "$bad$secret" ]; then
		[ -n "$bad" ] && printf 'lint: banned call:\n%s\n' "$bad" >&2
		[ -n "$secret" ] && printf 'lint: memcmp on a secret (use CRYPTO_memcmp):\n%s\n' "$secret" >&2
		exit 1
	fi
	echo "lint: no banned calls (${#files[@]} files)"
}

case "${1:-all}" in
format) run_format ;;
banned) run_banned ;;
all)
	run_format
	run_banned
	;;
list)
	printf '%s\n' "${files[@]}"
	;;
*)
	echo "usage: lint.sh [format|banned|all|list]" >&2
	exit 2
	;;
esac
