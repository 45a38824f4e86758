#!/usr/bin/env bash
# The plain forward path on its event loops (proxy/egress_fwd.c), through the real custos
# binary (custos up) to a raw HTTP source: pipelined requests answered in order, many
# keep-alive connections at once, backpressure (a client that does not read holds the source
# back), a client that goes away mid-response (audited, the loop goes on), request bodies
# (Content-Length with Expect: 100-continue, chunked), the upstream read timeout, two events (decision + completion) per allowed request. With
# CUSTOS_EGRESS_FORWARD=threads set by the caller the same checks run on the thread path.
set -u
. "${CUSTOS_SRC:?}/tests/integration/egress_lib.bash"
eg_init egfwd curl python3 timeout
cd "$W"
PEER="$SRC/tests/integration/egress_forward_peer.py"
python3 "$PEER" server 0 "$W/src" & PIDS+=($!) # binds port 0 and says which: nobody can take it
P_SRC=$(eg_port_file "$W/src.port") || exit 1
P_IN=$(port); P_EG=$(port)

cat >custos.yaml <<EOY
version: 1
log: { level: info, format: json }
listeners:
  - { id: local, address: "127.0.0.1:$P_IN" }
models:
  - { id: m1, upstream: { url: "http://127.0.0.1:9" } }
data_sources:
  - { id: src, url: "http://localhost:$P_SRC/", classification: internal, allow_private_addresses: true }
egress:
  port: $P_EG
  max_connections_per_sandbox: 128
  timeouts: { connect: 2s, read: 5s, idle: 5s }
audit: { dir: "$W/audit" }
policy: { file: "$W/policy.yaml" }
EOY
eg_m1_policy <<EOY
  src: { url: "http://localhost:$P_SRC/", classification: internal }
rules:
  - id: read
    effect: allow
    when: { direction: egress, data: src, method: [GET, POST] }
EOY
chmod 600 custos.yaml policy.yaml
"$BIN" up -c custos.yaml >up.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up.log "$P_EG" "$P_SRC"

events() { cat "$W"/audit/* 2>/dev/null | sed 's/\\"/"/g'; }
count() { # count TEXT...: events holding every TEXT
	local ev; ev=$(events)
	for t in "$@"; do ev=$(grep -F -- "$t" <<<"$ev"); done
	[ -n "$ev" ] && wc -l <<<"$ev" || echo 0
}
at_least() { [ "$(count "${@:2}")" -ge "$1" ]; } # at_least N TEXT...: N such events or more
audited() { eg_wait 30 at_least 1 "$@"; } # audited TEXT...: one, waiting for the batch writer
PY() { timeout 60 python3 "$PEER" "$@"; }

out=$(PY pipeline "$P_EG" "$P_SRC" 3)
check "pipelined requests answered in order ($out)" test "$out" = "200:r0 200:r1 200:r2"
check "each pipelined request audited (decision and completion)" bash -c \
	"$(declare -f events count at_least eg_wait audited); W=$W; audited '\"egress.request\"' '/echo/r2' '\"decision\":\"allow\"' && audited '\"egress.decision\"' '/echo/r2'"

out=$(PY many "$P_EG" "$P_SRC" 40 25)
check "40 keep-alive connections x 25 requests at once, every answer right ($out)" test "${out%% *}" = 0
# The batch writer has them all once 1000 are there (or it never will: then count what there is).
eg_wait 60 at_least 1000 '"egress.request"' '"path":"/echo/c'
eg_wait 60 at_least 1000 '"egress.decision"' '"path":"/echo/c'
check "1000 completions audited" test "$(count '"egress.request"' '"path":"/echo/c')" -eq 1000
check "1000 decisions audited" test "$(count '"egress.decision"' '"path":"/echo/c')" -eq 1000

# The client reads nothing for 1 s once the source has begun, then everything (inside the 5 s
# read timeout: no progress either way for that long cuts a transfer off, by design). What the
# source may send meanwhile is what the kernel buffers on the way (custos' receive buffer from
# the source, autotuned up to tcp_rmem's maximum, and two send buffers, up to tcp_wmem's: 14 MiB
# with Debian's defaults, 40 MiB on a host with a 32 MiB tcp_rmem) plus 10 MiB for custos' own
# buffers; the response is twice that, at least 48 MiB, so a proxy without backpressure fails.
kbuf=$(($(awk '{print $3}' /proc/sys/net/ipv4/tcp_rmem) + 2 * $(awk '{print $3}' /proc/sys/net/ipv4/tcp_wmem)))
held=$((kbuf + (10 << 20)))
flood=$((2 * held > (48 << 20) ? 2 * held : 48 << 20))
out=$(PY flood "$P_EG" "$P_SRC" "$flood" 1 "$W/src")
sent_paused=$(sed -n 1p <<<"$out"); got=$(sed -n 2p <<<"$out")
check "backpressure: the source was held back while the client did not read ($sent_paused bytes sent, bound $held)" \
	test "${sent_paused:-0}" -gt 0 -a "${sent_paused:-0}" -lt "$held"
check "backpressure: then every byte arrived ($got of $flood)" test "${got:-0}" -eq "$flood"

out=$(PY abandon "$P_EG" "$P_SRC" $((48 << 20)) $((1 << 20)))
check "a client leaving mid-response: audited as cut off" \
	audited '"egress.request"' "/big/$((48 << 20))" 'client went away'
out=$(PY pipeline "$P_EG" "$P_SRC" 1)
check "the proxy serves on after it ($out)" test "$out" = "200:r0"

head -c $((4 << 20)) /dev/zero >body.bin
out=$(curl -s -x "http://127.0.0.1:$P_EG" -H 'Expect: 100-continue' --data-binary @body.bin "http://localhost:$P_SRC/len")
check "request body (4 MiB, Content-Length, Expect: 100-continue) forwarded whole ($out)" test "$out" = $((4 << 20))
out=$(curl -s -x "http://127.0.0.1:$P_EG" -H 'Transfer-Encoding: chunked' --data-binary @body.bin "http://localhost:$P_SRC/len")
check "chunked request body (4 MiB) forwarded whole ($out)" test "$out" = $((4 << 20))
check "request body bytes audited" audited '"egress.request"' '"path":"/len"' "\"bytes_up\":$((4 << 20))"
st=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG" "http://localhost:$P_SRC/slow")
check "a source silent past the read timeout -> 502 ($st)" test "$st" = 502
check "read timeout audited" audited '"egress.request"' '"path":"/slow"' '"status":502'

kill -TERM $UP
wait $UP
RC=$?
check "custos up stops cleanly on SIGTERM (exit $RC, no sanitizer report)" \
	bash -c "[ $RC -eq 0 ] && ! grep -q 'Sanitizer' '$W/up.log'"

# --- fail closed on the loops (audit durability batch): the writer dies, nothing goes upstream
"$BIN" up -c custos.yaml >up2.log 2>&1 & UP=$!
PIDS+=($UP)
eg_up "$UP" up2.log "$P_EG"
st=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$P_EG" "http://localhost:$P_SRC/echo/before")
check "allowed while the audit trail works ($st)" test "$st" = 200
# The audit writer is the process of custos up's tree (supervisor -> proxy -> writer) that
# holds a file of the trail directory open (as in egress_relay.sh).
WRITER=
for p in $(ps -o pid= --ppid "$UP") $(for c in $(ps -o pid= --ppid "$UP"); do ps -o pid= --ppid "$c"; done); do
	if ls -l "/proc/$p/fd" 2>/dev/null | grep -F -- "$W/audit/" >/dev/null; then
		WRITER=$p
		break
	fi
done
if [ -z "$WRITER" ]; then
	bad "found the audit writer process"
else
	kill -9 "$WRITER"
	# With durability batch a request does not wait for its event: one sent before the proxy
	# has noticed the writer's end is let through. Wait until it says so (not a fixed time).
	eg_wait 60 grep -Eq 'the writer process went away|sending to the writer' up2.log
	hdr=$(curl -s -o /dev/null -D - -x "http://127.0.0.1:$P_EG" "http://localhost:$P_SRC/echo/after" | tr -d '\r')
	check "refused with 503 once the writer is gone" grep -q '^HTTP/1.1 503' <<<"$hdr"
	check "the 503 says why" grep -q '^X-Custos-Reason: audit trail unavailable' <<<"$hdr"
	check "nothing reached the source" bash -c "! grep -q '^/echo/after' '$W/src.log'"
fi
kill -TERM $UP 2>/dev/null
wait $UP 2>/dev/null

eg_done
