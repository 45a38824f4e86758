#!/usr/bin/env bash
# Backpressure through the real binary: an 8 MiB model reply to a client that reads slowly.
# custos must stop reading from the model while its output buffer for that client is full, so
# its memory stays bounded (checked against the reply size, not a time), and the whole reply
# still arrives intact at the client's pace.
. "$(dirname "$0")/proxy_lib.bash"

make_pki
head -c $((8 << 20)) /dev/zero | tr '\0' 'x' >"$work/canned.txt"
start_fixture model --mode canned --canned-file "$work/canned.txt" --tokens 1
write_policy "$work/policy.yaml"
UPSTREAM_READ=60s write_config "$work/custos.yaml" "$FX_PORT"
start_custos "$work/custos.yaml"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$CU_PID/status"; }
chat='{"model":"test-model","messages":[{"role":"user","content":"give me a lot"}]}'

# Warm up (allocator, TLS), then measure.
curl -sS -o /dev/null --cacert "$work/tls/ca.crt" -H "Authorization: Bearer $ALICE" -d "$chat" \
	"https://localhost:$PORT/v1/chat/completions"
before=$(rss)
# A client that reads at 1 MiB/s: the 8 MiB reply takes ~8 s to drain; we look once it has
# 2 MiB (the transfer well under way, most of it still to come), not after a fixed time.
curl -sS --limit-rate 1M -o "$work/slow.out" --cacert "$work/tls/ca.crt" \
	-H "Authorization: Bearer $ALICE" -d "$chat" "https://localhost:$PORT/v1/chat/completions" &
slow=$!
has_2m() { [ "$(stat -c %s "$work/slow.out" 2>/dev/null || echo 0)" -ge $((2 << 20)) ]; }
wait_until 120 has_2m || fail "the slow download did not get going"
during=$(rss)
grow=$(((during - before) / 1024))
echo "custos RSS before ${before} KiB, during the slow download ${during} KiB (+${grow} MiB)"
if [ "$grow" -lt 4 ]; then
	ok "memory bounded while the client is slow (+${grow} MiB for an 8 MiB reply)"
else
	fail "custos buffered ${grow} MiB for a slow client"
fi
wait "$slow"
check "slow client's download completed" "$?" 0
n=$(tr -cd 'x' <"$work/slow.out" | wc -c)
[ "$n" -ge $((8 << 20)) ] && ok "full 8 MiB reply delivered to the slow client" || fail "slow reply truncated ($n bytes of content)"
[ "$fails" -eq 0 ]
