#!/usr/bin/env bash
# ctest: cost=80 (seconds, about: started first)
# HTTP/1.1 from a hostile peer on either side of the ingress proxy, through the real binary on
# raw sockets (docs/HTTP.md, DESIGN.md §6: malformed or ambiguous HTTP is refused with a status
# and an audit event, never smuggled or desynchronised).
# - A path spelt so that the policy normalises it ("//v1/...", "/%761/...") is still read as
#   the chat route: the body's max_tokens is checked (403, not 200), and the model server gets
#   the path the policy judged (with the query as sent).
# - The client's Host never reaches the model server: it gets its own name (the URL's host and
#   port), first after the request line.
# - Client framing refusals (CL+TE, "5, 5", a signed or 64-bit-overflowing length, TE twice,
#   an unknown coding, TE in HTTP/1.0, "0x" and overflowing chunk sizes, bare LF, bare CR, NUL,
#   obs-fold, space before a colon, '#' and dot segments in the target, absolute-form, two Host
#   fields, an unknown expectation, the h2 preface): each answered with its status, the
#   connection closed, and one audit event with that status and request id; a valid request
#   pipelined behind a refused one gets no answer.
# - A hostile model server (hostile_upstream.py, a TEST FIXTURE): both framings, "5, 5", an
#   unknown coding, obs-fold, bare LF, an unasked 101: 502 with the parser's reason in the
#   event; a 103 before the answer is skipped; bytes past Content-Length (a smuggled second
#   response) never reach the client as an answer.
. "$(dirname "$0")/proxy_lib.bash"
command -v python3 >/dev/null || skip "python3 not installed"
here=$(dirname "$0")

make_pki
python3 "$here/hostile_upstream.py" "$work/up.port" "$work/up.log" 2>"$work/up.err" &
pids+=($!)
wait_until 60 test -s "$work/up.port" || skip "hostile upstream did not start: $(cat "$work/up.err")"
write_policy "$work/policy.yaml"
write_config "$work/custos.yaml" "$(cat "$work/up.port")"
start_custos "$work/custos.yaml"

# ev ID: the audit event of request ID (one line, or nothing).
ev() { audit_grep "\"request_id\":\"$1\""; }
ev_has() { ev "$1" | grep -q -- "$2"; }
# says CASE TEXT: sends CASE again; its audit event must hold TEXT (the reason).
says() {
	local id
	id=$(python3 "$here/http_hostile_client.py" "$PORT2" "$1" | awk '{print $3}')
	if wait_until 30 ev_has "$id" "$2"; then
		ok "$1: the event says '$2'"
	else
		fail "$1: the event of $id does not say '$2': $(ev "$id")"
	fi
}

# hostile CASE STATUS [close] [ANSWERS]: sends CASE (http_hostile_client.py), wants ANSWERS
# (default STATUS) and, with close, the connection ended after them; then the audit event of
# the (first) answer's request id with "status":STATUS.
hostile() {
	local case=$1 want=$2 close=${3:-} answers=${4:-$2} out got conn ids id
	out=$(python3 "$here/http_hostile_client.py" "$PORT2" "$case" 1 "$close")
	read -r got conn ids <<<"$out"
	check "$case: answers" "$got" "$answers"
	[ -z "$close" ] || check "$case: connection" "$conn" closed
	id=${ids%%,*}
	if [ "$id" = "-" ] || [ -z "$id" ]; then
		fail "$case: no X-Request-Id in the answer ($out)"
		return
	fi
	if wait_until 30 ev_has "$id" "\"status\":$want"; then
		ok "$case: audited ($want)"
	else
		fail "$case: no audit event with status $want for $id: $(ev "$id")"
	fi
}

# 1. Path spellings: the chat route's checks hold, the upstream gets the judged path.
: >"$work/up.log"
hostile dslash-big 403
hostile pct-big 403
check "over-limit requests reached the upstream" "$(grep -c . "$work/up.log")" 0
hostile dslash-ok 200
check "upstream's request line" "$(tail -1 "$work/up.log")" \
	"POST /v1/chat/completions?x=%2F//y HTTP/1.1"
says pct-big "max_tokens above the policy's limit"
# Forwarding fields a client forges never reach the model server: only custos' own.
: >"$work/up.log"
hostile fwd-forged 200
check "forged forwarding fields: what the model server got" \
	"$(grep '^fwd ' "$work/up.log" | sort | tr '\n' '|')" \
	"fwd Host: 127.0.0.1:$(cat "$work/up.port")|fwd X-Forwarded-For: 127.0.0.1|fwd X-Forwarded-Proto: http|"
# Host: the client's never goes upstream (it could name another virtual host behind the model
# server's address); the model server gets its URL's host and port, first after the request line.
: >"$work/up.log"
hostile vhost 200
check "Host the model server got" "$(grep '^fwd Host' "$work/up.log")" "fwd Host: 127.0.0.1:$(cat "$work/up.port")"
check "and first" "$(grep '^first ' "$work/up.log")" "first Host"

# 2. Client framing: refused, closed, audited.
hostile cl-te 400 close
hostile cl-list 400 close
hostile cl-plus 400 close
hostile cl-huge 413 close
hostile te-te 400 close
hostile te-xchunked 501 close
hostile te-http10 400 close
hostile chunk-0x 400 close
hostile chunk-overflow 413 close
hostile bare-lf 400 close
hostile bare-cr 400 close
hostile nul 400 close
hostile obs-fold 400 close
hostile space-colon 400 close
hostile hash-target 400 close
hostile dot-target 400 close
hostile absolute 400 close
hostile host-twice 400 close
hostile expect-other 417 close
hostile h2-preface 505 close
hostile pipeline-after-400 400 close

# 3. A hostile model server: 502 with the reason, the client connection stays usable.
hostile up-cl-te 502
says up-cl-te "malformed upstream response: both Content-Length and Transfer-Encoding"
hostile up-cl-list 502
hostile up-te-xchunked 502
hostile up-obs-fold 502
hostile up-bare-lf 502
hostile up-switch 502
says up-switch "malformed upstream response: 101 Switching Protocols was never asked for"
hostile up-early-hints 200
# two pipelined requests; the first answer carries a smuggled second response behind it
out=$(python3 "$here/http_hostile_client.py" "$PORT2" up-cl-longer 2)
check "up-cl-longer: answers" "${out%% *}" "200,200"

[ "$fails" -eq 0 ] || exit 1
echo "all ok"
