#!/usr/bin/env bash
# `custos ctl --url` with a host name, through the real binary against `custos up`'s admin TCP
# listener (127.0.0.1): `localhost` and another name of this host's resolver that resolves only
# to loopback addresses are resolved (getaddrinfo) and used; a name that does not resolve is a
# failure (exit 1) naming the resolver's error; a malformed HOST:PORT is a usage error (exit 2);
# numeric addresses work as before. A name resolving to a non-loopback address needs
# --insecure-remote (the same check as for a numeric address, on every address the name has);
# that case is not tested here, as it would need a resolver entry this test does not own.
. "$(dirname "$0")/proxy_lib.bash"

command -v getent >/dev/null || skip "getent not installed"

admin_tcp_setup
start_admin_custos

# ctlu URL ARGS...: runs ctl against URL; prints "rc|stdout|stderr".
ctlu() {
	local out err rc
	out=$("$bin" ctl --url "$1" --token-file "$work/token" "${@:2}" 2>"$work/ctl.err")
	rc=$?
	err=$(cat "$work/ctl.err")
	echo "$rc|$out|$err"
}
loopback_only() { # NAME: every address getent gives is loopback (and there is one)
	local a n=0
	for a in $(getent ahosts "$1" | awk '{print $1}' | sort -u); do
		case $a in 127.* | ::1 | ::ffff:127.*) n=$((n + 1)) ;; *) return 1 ;; esac
	done
	[ "$n" -gt 0 ]
}

check "numeric 127.0.0.1" "$(ctlu "http://127.0.0.1:$APORT" health)" '0|{"status":"ok"}|'
if loopback_only localhost && getent ahosts localhost | grep -q '^127\.'; then
	check "localhost" "$(ctlu "http://localhost:$APORT" health)" '0|{"status":"ok"}|'
else
	fail "localhost does not resolve to loopback addresses here: $(getent ahosts localhost)"
fi

# Another name the resolver has for this host, loopback only (Debian's ip6-localhost, a
# container's own host name): with an IPv4 loopback address it reaches the listener; with ::1
# only, ctl resolved it and passed the loopback check, and the connection is refused.
name4='' name6=''
for n in $(getent hosts | awk '{for (i = 2; i <= NF; i++) print $i}' | sort -u); do
	[ "$n" = localhost ] && continue
	case $n in *[!A-Za-z0-9.-]*) continue ;; esac
	loopback_only "$n" || continue
	if getent ahosts "$n" | grep -q '^127\.'; then
		[ -n "$name4" ] || name4=$n
	else
		[ -n "$name6" ] || name6=$n
	fi
done
if [ -n "$name4" ]; then
	check "a loopback name ($name4)" "$(ctlu "http://$name4:$APORT" health)" '0|{"status":"ok"}|'
else
	echo "note: no name other than localhost resolves to 127.x here; that case not run"
fi
if [ -n "$name6" ]; then
	r=$(ctlu "http://$name6:$APORT" health)
	case $r in "1||custos ctl: connect $name6:$APORT"*"Connection refused") ok "an IPv6 loopback name ($name6): resolved, refused by ::1" ;;
	*) fail "IPv6 loopback name $name6: $r" ;; esac
else
	echo "note: no name resolves to ::1 only here; that case not run"
fi

r=$(ctlu "http://custos-no-such-host.invalid:$APORT" health)
case $r in "1||custos ctl: --url http://custos-no-such-host.invalid:$APORT: cannot resolve custos-no-such-host.invalid: "?*)
	ok "a name that does not resolve: exit 1, the resolver's error" ;;
*) fail "unresolvable name: $r" ;; esac
check "no port: usage" "$(ctlu "http://localhost" health | cut -d'|' -f1)" 2
check "port 0: usage" "$(ctlu "http://localhost:0" health | cut -d'|' -f1)" 2
check "port past 65535: usage" "$(ctlu "http://localhost:65536" health | cut -d'|' -f1)" 2
check "a name with '_': usage" "$(ctlu "http://no_such:$APORT" health | cut -d'|' -f1)" 2
check "a path: usage" "$(ctlu "http://localhost:$APORT/healthz" health | cut -d'|' -f1)" 2
check "[::1 unterminated: usage" "$(ctlu "http://[::1:$APORT" health | cut -d'|' -f1)" 2
r=$(ctlu "http://[::1]:$APORT" health)
case $r in "1||custos ctl: connect [::1]:$APORT: Connection refused") ok "numeric [::1]: nobody there (exit 1)" ;;
*) fail "[::1]: $r" ;; esac
r=$(ctlu "http://0.0.0.0:$APORT" health)
case $r in "2||"*"not a loopback address"*) ok "0.0.0.0 still needs --insecure-remote" ;; *) fail "0.0.0.0: $r" ;; esac
# A wrong token through a name: the answer's status decides (1), as for a numeric address.
printf 'wrong\n' >"$work/token.bad"
chmod 600 "$work/token.bad"
r=$("$bin" ctl --url "http://localhost:$APORT" --token-file "$work/token.bad" health 2>&1)
check "a 401 through a name: exit 1" "$?" 1

# --timeout: a listener whose accept queue is full drops the SYN (the kernel would retry it for
# about two minutes): the connect attempt ends after --timeout; one that accepts and never
# answers ends with "no answer"; a bad value is a usage error.
check "--timeout 0: usage" "$(ctlu "http://127.0.0.1:$APORT" --timeout 0 health | cut -d'|' -f1)" 2
check "--timeout x: usage" "$(ctlu "http://127.0.0.1:$APORT" --timeout x health | cut -d'|' -f1)" 2
python3 - "$work/stall.port" <<'PY' &
import socket, sys, time
full = socket.socket(); full.bind(("127.0.0.1", 0)); full.listen(0)
mute = socket.socket(); mute.bind(("127.0.0.1", 0)); mute.listen(8)
held = []
for _ in range(8):  # fill full's accept queue (never accepted); stop once a connect stalls
    c = socket.socket(); c.setblocking(False)
    try:
        c.connect(("127.0.0.1", full.getsockname()[1]))
    except BlockingIOError:
        pass
    held.append(c)
    time.sleep(0.05)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write("%d %d\n" % (full.getsockname()[1], mute.getsockname()[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
conns = []
while True:
    s, _ = mute.accept(); conns.append(s)
PY
pids+=($!)
wait_until 30 test -s "$work/stall.port"
read -r fullp mutep <"$work/stall.port"
r=$(ctlu "http://127.0.0.1:$fullp" --timeout 1 health)
case $r in "1||custos ctl: connect 127.0.0.1:$fullp: Connection timed out") ok "--timeout bounds a connect nobody accepts (exit 1)" ;;
*) fail "stalled connect: $r" ;; esac
r=$(ctlu "http://127.0.0.1:$mutep" --timeout 1 health)
case $r in "1||custos ctl: no answer within 1000 ms") ok "--timeout bounds the wait for the answer (exit 1)" ;;
*) fail "mute listener: $r" ;; esac

kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
grep -E 'Sanitizer|runtime error' "$work/custos.log" && fail "sanitizer report in the log" || ok "no sanitizer report"
[ "$fails" -eq 0 ] || exit 1
