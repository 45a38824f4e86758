# Free loopback ports for the integration tests (sourced, not a test itself: CTest runs *.sh).
# Between asking for a port and binding it, someone else could take one the kernel picked: ctest
# -j2 runs another test beside this one, whose fixtures bind port 0 and whose clients connect.
# So a port is taken below the kernel's ephemeral range (ip_local_port_range), which bind(0) and
# connect() never hand out, reserved against the other tests using these functions by an atomic
# mkdir under $PORT_RESERVE, and checked free by binding it. Where the ephemeral range leaves no
# room below it, the kernel picks (and the race remains).
# A reserved number is free for TCP and UDP both (one reservation covers either): a test may
# listen on it over UDP (a DNS server), or rely on nothing answering there (a dead server).
# Every port a test uses comes from here: no bind-to-0-then-close, no fixed numbers.
PORT_RESERVE=/tmp/custos-test-ports
if mkdir -p -m 1777 "$PORT_RESERVE" 2>/dev/null; then
	# reservations of a test killed before its cleanup (a test ends within 600 s)
	find "$PORT_RESERVE" -mindepth 1 -maxdepth 1 -mmin +30 -exec rmdir {} + 2>/dev/null
fi

# port_bindable PORT: a TCP listener could bind 127.0.0.1:PORT now (as custos does:
# SO_REUSEADDR), and so could a UDP socket (without SO_REUSEADDR, which would let it share the
# port with another UDP socket bound there).
port_bindable() {
	perl -MIO::Socket::INET -e 'IO::Socket::INET->new(Listen => 1, ReuseAddr => 1,
		LocalAddr => "127.0.0.1:$ARGV[0]") or exit 1;
		IO::Socket::INET->new(Proto => "udp", LocalAddr => "127.0.0.1:$ARGV[0]") or exit 1' "$1"
}

# port_reserve DIR: prints a free port, never one given before to a caller with this DIR (its
# test's own directory, where DIR/.ports and DIR/.reserved keep count: callers run in $(...)).
port_reserve() {
	local dir=$1 p lo _
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
	if [ "$lo" -gt 11024 ] && [ -d "$PORT_RESERVE" ]; then
		for _ in $(seq 100); do
			p=$((10000 + (RANDOM * 32768 + RANDOM) % (lo - 10000)))
			mkdir "$PORT_RESERVE/$p" 2>/dev/null || continue
			echo "$p" >>"$dir/.reserved"
			port_bindable "$p" || continue
			echo "$p" >>"$dir/.ports"
			echo "$p"
			return 0
		done
	fi
	port_kernel "$dir"
}

# port_kernel DIR: a free port the kernel picks (in its ephemeral range), free for TCP and UDP,
# never one given before to a caller with this DIR. Another test may take it before it is bound:
# only for a port that must lie in that range.
port_kernel() {
	local dir=$1 p
	for _ in $(seq 20); do
		p=$(perl -MIO::Socket::INET -e 'my $s=IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1:0") or die;
			IO::Socket::INET->new(Proto=>"udp",LocalAddr=>"127.0.0.1:".$s->sockport) or exit 1;
			print $s->sockport') || continue
		grep -qx "$p" "$dir/.ports" 2>/dev/null && continue
		echo "$p" >>"$dir/.ports"
		echo "$p"
		return 0
	done
	return 1
}

# port_release DIR: gives back the ports reserved for DIR (at exit, once its listeners are gone).
port_release() {
	local p
	[ -f "$1/.reserved" ] || return 0
	while read -r p; do rmdir "$PORT_RESERVE/$p" 2>/dev/null || true; done <"$1/.reserved"
	rm -f "$1/.reserved"
}
