#!/usr/bin/env bash
# Content inspection through the real proxy (issue 8), with curl and the model-server fixture:
# a card number split over four SSE events is redacted in the stream the client receives; a
# redacted prompt reaches the model as valid JSON without the value (echo mode shows what
# reached it); an e-mail written with \u0040 is still caught; a prompt deny is 403 and never
# reaches the model; a response deny mid-stream ends the stream with an error event and
# [DONE]; a non-streamed JSON response is redacted and sent with its new Content-Length, and
# one denied is a 403 with the error object, never a 200 (its head is held with the body);
# pipelined requests after such a deny are answered in order; a JSON body over the 4 MiB
# held for inspection is a 502; a `log` finding changes nothing; values
# written with Unicode look-alikes (fullwidth, no-break and zero-width characters) are caught
# in prompts and responses; a value split over two content parts or two messages, or between a
# message and a tool call's arguments, is caught, and so is one used as a member name of the
# arguments; a
# responses-API stream (responses_upstream.py) with values split over its delta events is
# redacted; parts of a stream (parts_upstream.py: three chat choices, reasoning_content, an
# audio transcript, content as text parts and two tool calls interleaved; Anthropic-style content blocks; llama.cpp /completion events) each
# have a card split over their events masked, and a key split so is denied; the audit trail
# has finding types and counts and none of the values. While
# responses are inspected the model is asked for Accept-Encoding: identity (the fixture's head
# log shows what reached it); otherwise it gets the client's own Accept-Encoding.
# A content-encoded answer (raw_upstream.py: gzip JSON, a br stream) is refused at its head
# with a 502 naming the coding, the client connection kept; a 204 under one is forwarded.
. "$(dirname "$0")/proxy_lib.bash"

CARD="4111 1111 1111 1111"
CARD_TEXT="Card $CARD."
KEY="AKIAIOSFODNN7EXAMPLE"
DENY_TEXT="Starting the answer, all fine so far. The key is $KEY and more text follows here."

make_pki
start_fixture card --mode canned --canned "$CARD_TEXT" --tokens 4
card_port=$FX_PORT
start_fixture deny --mode canned --canned "$DENY_TEXT" --tokens 8
deny_port=$FX_PORT
start_fixture echo --tokens 4 --log "$work/echo.requests" --log-headers "$work/echo.heads"
echo_port=$FX_PORT
# a JSON answer larger than the 4 MiB held for inspection (5 MiB of text)
head -c $((5 << 20)) /dev/zero | tr '\0' 'x' >"$work/big.txt"
start_fixture big --mode canned --canned-file "$work/big.txt" --tokens 4
big_port=$FX_PORT
# the responses API (its own fixture): a card and an e-mail with a fullwidth @, each split over
# output_text.delta events
RESP_TEXT=$'Card 4111 1111 1111 1111, mail jane.doe\xef\xbc\xa0example.com.'
python3 "$(dirname "$0")/responses_upstream.py" "$work/resp.port" "$RESP_TEXT" 8 2>"$work/resp.err" &
pids+=($!)
wait_until 60 test -s "$work/resp.port"
[ -s "$work/resp.port" ] || skip "responses upstream did not start: $(cat "$work/resp.err")"
resp_port=$(cat "$work/resp.port")
# chat chunks with parts interleaved (choices, reasoning, tool calls), Anthropic-style events
# and llama.cpp /completion events (its own fixture): each value split over a part's events
# (the key split too: "The key is ", "AKIAIOSFODN", "N7EXAMPLE, ", "more text")
python3 "$(dirname "$0")/parts_upstream.py" "$work/parts.port" "$CARD_TEXT" "The key is $KEY, more text" 4 \
	2>"$work/parts.err" &
pids+=($!)
wait_until 60 test -s "$work/parts.port"
[ -s "$work/parts.port" ] || skip "parts upstream did not start: $(cat "$work/parts.err")"
parts_port=$(cat "$work/parts.port")
# raw answers (raw_upstream.py, picked by X-Raw): content-encoded ones under inspection
start_raw_upstream

cat >"$work/policy.yaml" <<POL
version: 1
principals:
  alice: { match: { api_key_sha256: "$(sha256hex $ALICE)" } }
models:
  test-model: { isolation: none }
  card-model: { isolation: none }
  deny-model: { isolation: none }
  plain-model: { isolation: none }
  resp-model: { isolation: none }
  parts-model: { isolation: none }
  big-model: { isolation: none }
  raw-model: { isolation: none }
rules:
  - id: chat-inspected
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: "POST /v1/chat/completions"
      model: [test-model, card-model, deny-model, parts-model, big-model, raw-model]
    inspect:
      prompt: { email: redact, us_ssn: deny, ipv4: log }
      response: { payment_card: redact, email: redact, aws_access_key: deny }
  - id: chat-plain
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: "POST /v1/chat/completions"
      model: plain-model
  - id: responses-inspected
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: "POST /v1/responses"
      model: resp-model
    inspect:
      response: { payment_card: redact, email: redact, aws_access_key: deny }
  - id: parts-inspected
    effect: allow
    when:
      direction: ingress
      principal: alice
      route: ["POST /v1/messages", "POST /completion"]
      model: parts-model
    inspect:
      response: { payment_card: redact, aws_access_key: deny }
POL
chmod 644 "$work/policy.yaml"
EXTRA_MODELS="  - id: card-model
    upstream: { url: \"http://127.0.0.1:$card_port/\" }
  - id: deny-model
    upstream: { url: \"http://127.0.0.1:$deny_port/\" }
  - id: plain-model
    upstream: { url: \"http://127.0.0.1:$echo_port/\" }
  - id: resp-model
    upstream: { url: \"http://127.0.0.1:$resp_port/\" }
  - id: big-model
    upstream: { url: \"http://127.0.0.1:$big_port/\" }
  - id: raw-model
    upstream: { url: \"http://127.0.0.1:$RAW_PORT/\" }
  - id: parts-model
    upstream: { url: \"http://127.0.0.1:$parts_port/\" }
routes:
  - path: /completion
    model: parts-model"
write_config "$work/custos.yaml" "$echo_port"
start_custos "$work/custos.yaml"
plain="http://127.0.0.1:$PORT2"
C=(curl -sS --max-time 20 -H "Authorization: Bearer $ALICE")

# sse_text FILE: the delta.content of every data event joined (fails on an event that is not
# JSON); sse_bad FILE: the number of data events (other than [DONE]) that are not valid JSON.
sse_text() {
	perl -MJSON::PP -ne 'next unless s/^data: //; chomp; s/\r$//; next if $_ eq "[DONE]";
		my $j = decode_json($_); for my $c (@{$j->{choices} || []}) {
		print $c->{delta}{content} if defined $c->{delta}{content} }' "$1"
}
sse_bad() {
	perl -MJSON::PP -ne 'next unless s/^data: //; chomp; s/\r$//; next if $_ eq "[DONE]";
		$n++ unless eval { decode_json($_); 1 }; END { print $n + 0 }' "$1"
}
# sse_strings FILE: what a stream holds that could carry a value, one per line: every JSON string
# of its data: events (decoded, so an escaped \uff11 is the character), and every line that is
# not a JSON event, as it is. JSON numbers are left out: the fixture's "created" time (an epoch
# second such as 1796111100) or a count may hold "1111" or "4111" by chance.
sse_strings() {
	perl -MJSON::PP -MB -ne 'binmode STDOUT, ":utf8"; chomp; s/\r$//;
		sub walk { my $v = shift;
			if (ref $v eq "HASH") { walk($_) for values %$v; return }
			if (ref $v eq "ARRAY") { walk($_) for @$v; return }
			return unless defined $v && !ref $v;
			my $f = B::svref_2object(\$v)->FLAGS;
			return if ($f & (B::SVf_IOK | B::SVf_NOK)) && !($f & B::SVf_POK);
			print "$v\n" }
		my $d = $_;
		if ($d =~ s/^data: // && $d ne "[DONE]") {
			my $j = eval { JSON::PP->new->allow_nonref->decode($d) };
			if (defined $j) { walk($j); next } }
		print "$_\n"' "$1"
}
# json_content FILE: choices[0].message.content of a chat.completion.
json_content() {
	perl -MJSON::PP -0777 -ne 'print decode_json($_)->{choices}[0]{message}{content}' "$1"
}
rid() { sed -n 's/^[Xx]-[Rr]equest-[Ii]d: *\([0-9a-f]*\).*/\1/p' "$1" | tr -d '\r'; }
# audit_of ID: the audit line of one request (waits for it to be written).
audit_of() {
	wait_until 30 audit_grep "\"request_id\":\"$1\"" >/dev/null ||
		{ echo "no audit event for request $1 after 30 s" >&2; return 1; }
	audit_grep "\"request_id\":\"$1\""
}

stream='{"model":"%s","stream":true,"messages":[{"role":"user","content":"go"}]}'

# -- (1) the fixture really splits the card number over four events (no proxy)
curl -sS -N --max-time 10 -d "$(printf "$stream" card-model)" \
	"http://127.0.0.1:$card_port/v1/chat/completions" >"$work/direct.sse"
check "fixture stream text" "$(sse_text "$work/direct.sse")" "$CARD_TEXT"
parts=$(perl -MJSON::PP -ne 'next unless s/^data: //; chomp; next if $_ eq "[DONE]";
	my $c = decode_json($_)->{choices}[0]{delta}{content}; print "$c\n" if defined $c && $c =~ /\d/' \
	"$work/direct.sse" | wc -l)
check "card number spans events (fixture, direct)" "$parts" 4
whole=$(grep -c "$CARD" "$work/direct.sse")
check "no single fixture event holds the whole number" "$whole" 0

# -- (1) through custos: redacted in the stream the client receives
"${C[@]}" -N -D "$work/card.hdr" -o "$work/card.sse" -d "$(printf "$stream" card-model)" \
	"$plain/v1/chat/completions"
check "stream through custos: text" "$(sse_text "$work/card.sse")" "Card [REDACTED:PAYMENT_CARD]."
check "stream through custos: every event is JSON" "$(sse_bad "$work/card.sse")" 0
# Every event's delta.content, one per line: none holds a digit of the number.
perl -MJSON::PP -ne 'next unless s/^data: //; chomp; next if $_ eq "[DONE]";
	for my $c (@{decode_json($_)->{choices} || []}) {
	print "$c->{delta}{content}\n" if defined $c->{delta}{content} }' "$work/card.sse" >"$work/card.parts"
check "no fragment of the number in any event" "$(grep -c '[0-9]' "$work/card.parts")" 0
sse_strings "$work/card.sse" | grep -q '4111' && fail "raw stream holds 4111" || ok "raw stream has no 4111"
grep -q '^data: \[DONE\]' "$work/card.sse" && ok "stream ends with [DONE]" || fail "no [DONE]"
card_id=$(rid "$work/card.hdr")
line=$(audit_of "$card_id")
echo "$line" | grep -q '"type":"payment_card","count":1' && ok "audit: payment_card:1 for the stream" ||
	fail "audit lacks the card finding: $line"

# -- an HTTP/1.0 client gets the rewritten stream close-delimited
"${C[@]}" -0 -N -o "$work/card10.sse" -d "$(printf "$stream" card-model)" "$plain/v1/chat/completions"
check "HTTP/1.0 client: stream redacted" "$(sse_text "$work/card10.sse")" "Card [REDACTED:PAYMENT_CARD]."

# -- (2) a redacted prompt reaches the model as JSON, without the value (echo shows it)
body='{"model":"test-model","messages":[{"role":"user","content":"mail bob@example.com please, \"quoted\" \\n ok"}]}'
code=$("${C[@]}" -D "$work/red.hdr" -o "$work/red.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "redacted prompt: status (the fixture answers 400 to invalid JSON)" "$code" 200
got=$(json_content "$work/red.json")
check "what reached the model" "$got" 'mail [REDACTED:EMAIL] please, "quoted" \n ok'
# The fixture logged the body length it read: the redacted body's, with a fixed Content-Length.
redacted_body=${body/bob@example.com/[REDACTED:EMAIL]}
want_len=${#redacted_body}
last=$(tail -1 "$work/echo.requests")
check "fixture read the rewritten body (Content-Length fixed)" "$last" "POST /v1/chat/completions $want_len"
grep -q 'bob@example.com' "$work/red.json" && fail "value in the response" || ok "value not in the response"
red_id=$(rid "$work/red.hdr")
line=$(audit_of "$red_id")
echo "$line" | grep -q '"type":"email","count":1' && ok "audit: email:1" || fail "audit lacks email: $line"
echo "$line" | grep -q '"inspect":"prompt:redact' && ok "audit: prompt action redact" || fail "audit inspect: $line"

# -- JSON escape: the @ written as \u0040
body='{"model":"test-model","messages":[{"role":"user","content":"write to carol\u0040example.org now"}]}'
code=$("${C[@]}" -o "$work/esc.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "escaped e-mail: status" "$code" 200
check "escaped e-mail caught" "$(json_content "$work/esc.json")" "write to [REDACTED:EMAIL] now"

# -- tool-call arguments holding a JSON document nested past the inspector's depth (64 with the
# string's own): refused as not inspectable (422, the reason in the event), not passed as text
deep=$(printf '[%.0s' $(seq 70))$(printf ']%.0s' $(seq 70))
body='{"model":"test-model","messages":[{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"'"$deep"'"}}]}]}'
code=$("${C[@]}" -D "$work/deep.hdr" -o /dev/null -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "arguments nested too deep to inspect: status" "$code" 422
line=$(audit_of "$(rid "$work/deep.hdr")")
echo "$line" | grep -q 'request body cannot be inspected: JSON body: a JSON document in a string nested deeper than 64' &&
	ok "audit: why it could not be inspected" || fail "audit reason: $line"

# -- Unicode obfuscation in the prompt: an e-mail with a fullwidth @ (as a JSON escape) and a
# fullwidth dot (raw UTF-8) is masked in what reaches the model; an SSN with non-breaking
# hyphens is denied like an ASCII one
body=$'{"model":"test-model","messages":[{"role":"user","content":"write to carol\\uff20example\xef\xbc\x8eorg now"}]}'
code=$("${C[@]}" -o "$work/uni.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "fullwidth e-mail: status" "$code" 200
check "fullwidth e-mail caught" "$(json_content "$work/uni.json")" "write to [REDACTED:EMAIL] now"
before=$(wc -l <"$work/echo.requests")
body=$'{"model":"test-model","messages":[{"role":"user","content":"my ssn is 123\xe2\x80\x9145\xe2\x80\x916789"}]}'
code=$("${C[@]}" -o "$work/unideny.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "SSN with non-breaking hyphens -> 403" "$code" 403
check "denied obfuscated prompt never reached the model" "$(wc -l <"$work/echo.requests")" "$before"

# -- a prompt deny: 403, audited, never reaches the model
before=$(wc -l <"$work/echo.requests")
body='{"model":"test-model","messages":[{"role":"user","content":"my ssn is 123-45-6789"}]}'
code=$("${C[@]}" -D "$work/deny.hdr" -o "$work/deny.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "prompt deny -> 403" "$code" 403
grep -q 'us_ssn' "$work/deny.json" && ok "403 names the detector" || fail "403 reason: $(cat "$work/deny.json")"
grep -q '123-45-6789' "$work/deny.json" && fail "403 body holds the value" || ok "403 body has no value"
check "denied prompt never reached the model" "$(wc -l <"$work/echo.requests")" "$before"
deny_id=$(rid "$work/deny.hdr")
line=$(audit_of "$deny_id")
echo "$line" | grep -q '"status":403' && echo "$line" | grep -q '"type":"us_ssn","count":1' &&
	ok "audit: 403 with us_ssn:1" || fail "audit of the prompt deny: $line"

# -- a prompt with a Content-Encoding cannot be inspected: 415, never reaches the model
before=$(wc -l <"$work/echo.requests")
body='{"model":"test-model","messages":[{"role":"user","content":"hello"}]}'
code=$("${C[@]}" -o /dev/null -w '%{http_code}' -H 'Content-Encoding: identity, gzip' -d "$body" "$plain/v1/chat/completions")
check "encoded prompt -> 415" "$code" 415
check "encoded prompt never reached the model" "$(wc -l <"$work/echo.requests")" "$before"

# -- a `log` action: the text goes through unchanged, the finding is audited
body='{"model":"test-model","messages":[{"role":"user","content":"host 10.1.2.3 is up"}]}'
"${C[@]}" -D "$work/log.hdr" -o "$work/log.json" -d "$body" "$plain/v1/chat/completions"
check "log action leaves the prompt" "$(json_content "$work/log.json")" "host 10.1.2.3 is up"
line=$(audit_of "$(rid "$work/log.hdr")")
echo "$line" | grep -q '"type":"ipv4","count":1' && ok "audit: ipv4:1 (log)" || fail "audit of log: $line"

# -- a non-streamed JSON response is redacted (the card is not a prompt detector here)
body="{\"model\":\"test-model\",\"messages\":[{\"role\":\"user\",\"content\":\"pay with $CARD today\"}]}"
"${C[@]}" -o "$work/resp.json" -d "$body" "$plain/v1/chat/completions"
check "JSON response redacted" "$(json_content "$work/resp.json")" "pay with [REDACTED:PAYMENT_CARD] today"

# -- the same echoed back as a stream
sbody="{\"model\":\"test-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"pay with $CARD today\"}]}"
"${C[@]}" -N -o "$work/echo.sse" -d "$sbody" "$plain/v1/chat/completions"
check "echoed stream redacted" "$(sse_text "$work/echo.sse")" "pay with [REDACTED:PAYMENT_CARD] today"

# -- a card in fullwidth digits with no-break spaces and zero-width spaces, echoed back as a
# stream (four events, so the number spans them) and as JSON: masked whole, valid UTF-8 JSON
FWCARD=$'\xef\xbc\x94\xef\xbc\x91\xef\xbc\x91\xef\xbc\x91\xc2\xa0\xef\xbc\x91\xef\xbc\x91\xef\xbc\x91\xef\xbc\x91\xc2\xa01111\xc2\xa01\\u200b1\\u200b1\\u200b1'
sbody="{\"model\":\"test-model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"pay with $FWCARD today\"}]}"
curl -sS -N --max-time 10 -o "$work/unidirect.sse" -d "$sbody" "http://127.0.0.1:$echo_port/v1/chat/completions"
check "fixture echoes the obfuscated card over several events" \
	"$(grep -c $'\xef\xbc\x91' "$work/unidirect.sse" | awk '{print ($1 >= 2) ? "yes" : "no"}')" yes
"${C[@]}" -N -o "$work/uni.sse" -d "$sbody" "$plain/v1/chat/completions"
check "obfuscated card in a stream: redacted" "$(sse_text "$work/uni.sse")" "pay with [REDACTED:PAYMENT_CARD] today"
check "obfuscated card in a stream: every event is JSON" "$(sse_bad "$work/uni.sse")" 0
sse_strings "$work/uni.sse" | grep -q -e $'\xef\xbc\x91' -e '1111' && fail "a digit of the card reached the client" ||
	ok "no digit of the card in the stream"
"${C[@]}" -o "$work/uni-resp.json" -d "${sbody/\"stream\":true,/}" "$plain/v1/chat/completions"
check "obfuscated card in a JSON response: redacted" "$(json_content "$work/uni-resp.json")" "pay with [REDACTED:PAYMENT_CARD] today"

# -- the responses API: text streamed as output_text.delta events (not chat chunks); the card
# and the e-mail are each split over events (the fixture, directly), and reach the client
# masked: the deltas, the .done events that repeat the text, response.completed
# resp_deltas FILE: the output_text.delta texts joined; resp_done FILE: output_text.done's text.
resp_deltas() {
	perl -MJSON::PP -ne 'binmode STDOUT, ":utf8"; next unless s/^data: //; chomp;
		my $j = decode_json($_); print $j->{delta} if $j->{type} eq "response.output_text.delta"' "$1"
}
resp_done() {
	perl -MJSON::PP -ne 'binmode STDOUT, ":utf8"; next unless s/^data: //; chomp;
		my $j = decode_json($_); print $j->{text} if $j->{type} eq "response.output_text.done"' "$1"
}
rbody='{"model":"resp-model","stream":true,"input":"go"}'
curl -sS -N --max-time 10 -o "$work/resp-direct.sse" -d "$rbody" "http://127.0.0.1:$resp_port/v1/responses"
check "responses fixture: the deltas hold the text" "$(resp_deltas "$work/resp-direct.sse")" "$RESP_TEXT"
check "responses fixture: no single delta holds the card" \
	"$(perl -MJSON::PP -ne 'next unless s/^data: //; my $j = decode_json($_); print "x\n" if ($j->{delta} // "") =~ /4111 1111/' "$work/resp-direct.sse" | wc -l)" 0
"${C[@]}" -N -D "$work/resp.hdr" -o "$work/resp.sse" -d "$rbody" "$plain/v1/responses"
want='Card [REDACTED:PAYMENT_CARD], mail [REDACTED:EMAIL].'
check "responses stream through custos: deltas" "$(resp_deltas "$work/resp.sse")" "$want"
check "responses stream through custos: output_text.done" "$(resp_done "$work/resp.sse")" "$want"
check "responses stream through custos: every event is JSON" "$(sse_bad "$work/resp.sse")" 0
sse_strings "$work/resp.sse" | grep -q -e '4111' -e '1111' -e 'jane' -e $'\xef\xbc\xa0' && fail "a piece of a value reached the client" ||
	ok "no piece of the card or the e-mail in the stream"
tail -n 3 "$work/resp.sse" | grep -q '"type": *"response.completed"' && ok "response.completed still ends the stream" ||
	fail "stream end: $(tail -n 3 "$work/resp.sse")"
line=$(audit_of "$(rid "$work/resp.hdr")")
echo "$line" | grep -q '"type":"payment_card"' && echo "$line" | grep -q '"type":"email"' &&
	ok "audit: the responses stream's findings" || fail "audit of the responses stream: $line"

# -- parts of a stream, each its own joined text: a card split over the events of one part is
# masked in every part, with other parts' events between them; the fixture, directly, splits it
# part_text FILE KIND N FIELD: the text of one part the client got, joined (KIND chat: choice N's
# delta FIELD, or tool call FIELD=args:T's arguments, FIELD=name:T its name; anth: block N's delta FIELD; llama: content).
part_text() {
	perl -MJSON::PP -e 'my ($kind, $n, $field) = @ARGV[1..3]; open(my $f, "<", $ARGV[0]) or die;
		while (<$f>) { next unless s/^data: //; chomp; s/\r$//; next if $_ eq "[DONE]";
		my $j = decode_json($_);
		if ($kind eq "chat") { for my $c (@{$j->{choices} || []}) { next unless $c->{index} == $n;
			if ($field =~ /^(args|name):(\d+)$/) { my ($m, $t) = ($1, $2);
				$m = "arguments" if $m eq "args";
				for my $tc (@{$c->{delta}{tool_calls} || []}) {
					print $tc->{function}{$m} // "" if $tc->{index} == $t } }
			elsif ($field eq "transcript") { print $c->{delta}{audio}{transcript} // "" }
			elsif (ref $c->{delta}{$field} eq "ARRAY") {
				print $_->{text} for @{$c->{delta}{$field}} }
			elsif (defined $c->{delta}{$field}) { print $c->{delta}{$field} } } }
		elsif ($kind eq "anth") { print $field eq "cited_text" ? $j->{delta}{citation}{cited_text} // ""
			: $j->{delta}{$field} // ""
			if ($j->{type} // "") eq "content_block_delta" && $j->{index} == $n }
		elsif (defined $j->{content}) { print $j->{content} } }' "$@"
}
MASKED='Card [REDACTED:PAYMENT_CARD].'
MASKED_ARGS='{"card": "Card [REDACTED:PAYMENT_CARD]."}'
pbody='{"model":"parts-model","stream":true,"messages":[{"role":"user","content":"go"}]}'
curl -sS -N --max-time 10 -o "$work/parts-direct.sse" -d "$pbody" "http://127.0.0.1:$parts_port/v1/chat/completions"
check "parts fixture: choice 0 content" "$(part_text "$work/parts-direct.sse" chat 0 content)" "$CARD_TEXT"
grep -q "$CARD" "$work/parts-direct.sse" && fail "a fixture event holds the whole card" ||
	ok "no fixture event holds the whole card"
# sse_ids FILE: the id: values of a stream, in order, and its retry: lines.
sse_ids() { sed -n 's/^id: \(.*\)/\1/p; s/^retry: \(.*\)/r\1/p' "$1" | tr -d '\r' | tr '\n' ' '; }
direct_ids=$(sse_ids "$work/parts-direct.sse")
"${C[@]}" -N -D "$work/parts.hdr" -o "$work/parts.sse" -d "$pbody" "$plain/v1/chat/completions"
check "chat parts: every event is JSON" "$(sse_bad "$work/parts.sse")" 0
check "chat parts: every event's id: and retry: lines carried over" "$(sse_ids "$work/parts.sse")" "$direct_ids"
check "chat parts: choice 0 content" "$(part_text "$work/parts.sse" chat 0 content)" "$MASKED"
check "chat parts: choice 1 content" "$(part_text "$work/parts.sse" chat 1 content)" "$MASKED"
check "chat parts: choice 1 audio transcript" "$(part_text "$work/parts.sse" chat 1 transcript)" "$MASKED"
check "chat parts: choice 2 content as text parts" "$(part_text "$work/parts.sse" chat 2 content)" "$MASKED"
grep -q '{"type": "image_url", "image_url": {"url": "https://x.example/a.png"}}' "$work/parts.sse" &&
	ok "chat parts: an image part beside text parts passes as it came" ||
	fail "chat parts: the image part was changed"
check "chat parts: choice 0 reasoning_content" \
	"$(part_text "$work/parts.sse" chat 0 reasoning_content)" "$MASKED"
check "chat parts: tool call 0 arguments" "$(part_text "$work/parts.sse" chat 0 args:0)" "$MASKED_ARGS"
check "chat parts: tool call 1 arguments" "$(part_text "$work/parts.sse" chat 0 args:1)" "$MASKED_ARGS"
check "chat parts: tool call 2 name split over events, held and masked whole" \
	"$(part_text "$work/parts.sse" chat 0 name:2)" "$MASKED"
grep -q '"id": *"call_2".*"name": *"Card \[REDACTED:PAYMENT_CARD\]\."' "$work/parts.sse" &&
	ok "chat parts: the whole name in the tool call's first delta" ||
	fail "chat parts: the name is not whole in the first delta"
sse_strings "$work/parts.sse" | grep -q -e '4111' -e '1111' && fail "chat parts: a piece of the card reached the client" ||
	ok "chat parts: no piece of the card in the stream"
line=$(audit_of "$(rid "$work/parts.hdr")")
echo "$line" | grep -q '"type":"payment_card","count":8' && ok "audit: payment_card:8 for the eight parts" ||
	fail "audit of the chat parts: $line"
abody='{"model":"parts-model","stream":true,"max_tokens":64,"messages":[{"role":"user","content":"go"}]}'
"${C[@]}" -N -o "$work/anth.sse" -d "$abody" "$plain/v1/messages"
check "anthropic: every event is JSON" "$(sse_bad "$work/anth.sse")" 0
curl -sS -N --max-time 10 -o "$work/anth-direct.sse" -d "$abody" "http://127.0.0.1:$parts_port/v1/messages"
check "anthropic: id: and retry: lines carried over" "$(sse_ids "$work/anth.sse")" "$(sse_ids "$work/anth-direct.sse")"
check "anthropic: thinking block" "$(part_text "$work/anth.sse" anth 0 thinking)" "$MASKED"
check "anthropic: text block" "$(part_text "$work/anth.sse" anth 1 text)" "$MASKED"
check "anthropic: tool_use input_json" "$(part_text "$work/anth.sse" anth 2 partial_json)" "$MASKED_ARGS"
check "anthropic: citations' cited_text joined per block" \
	"$(part_text "$work/anth.sse" anth 1 cited_text)" "$MASKED"
sse_strings "$work/anth.sse" | grep -q -e '4111' -e '1111' && fail "anthropic: a piece of the card reached the client" ||
	ok "anthropic: no piece of the card in the stream"
tail -n 3 "$work/anth.sse" | grep -q 'message_stop' && ok "anthropic: message_stop still ends the stream" ||
	fail "anthropic stream end: $(tail -n 3 "$work/anth.sse")"
"${C[@]}" -N -o "$work/anth-deny.sse" -d "${abody/go/deny}" "$plain/v1/messages"
grep -q '"code":"content_denied"' "$work/anth-deny.sse" && ok "anthropic: deny ends the stream" ||
	fail "anthropic deny: $(cat "$work/anth-deny.sse")"
grep -q -e 'AKIA' -e 'N7EX' -e 'more text' "$work/anth-deny.sse" &&
	fail "anthropic: key fragment or later text reached the client" || ok "anthropic: no key fragment"
lbody='{"prompt":"go","stream":true,"n_predict":16}'
"${C[@]}" -N -o "$work/llama.sse" -d "$lbody" "$plain/completion"
check "llama.cpp /completion: every event is JSON" "$(sse_bad "$work/llama.sse")" 0
curl -sS -N --max-time 10 -o "$work/llama-direct.sse" -d "$lbody" "http://127.0.0.1:$parts_port/completion"
check "llama.cpp: id: and retry: lines carried over" "$(sse_ids "$work/llama.sse")" "$(sse_ids "$work/llama-direct.sse")"
check "llama.cpp /completion: content" "$(part_text "$work/llama.sse" llama 0 content)" "$MASKED"
sse_strings "$work/llama.sse" | grep -q -e '4111' -e '1111' && fail "llama.cpp: a piece of the card reached the client" ||
	ok "llama.cpp: no piece of the card in the stream"
"${C[@]}" -N -o "$work/llama-deny.sse" -d "${lbody/go/deny}" "$plain/completion"
grep -q '"code":"content_denied"' "$work/llama-deny.sse" && ok "llama.cpp: deny ends the stream" ||
	fail "llama.cpp deny: $(cat "$work/llama-deny.sse")"
grep -q -e 'AKIA' -e 'N7EX' -e 'more text' "$work/llama-deny.sse" && fail "llama.cpp: key or later text reached the client" ||
	ok "llama.cpp: nothing of the key, nothing after it"

# -- a value split over two text parts of one message reaches the model masked in both (the
# echo fixture concatenates parts); an SSN split over two messages is denied
body='{"model":"test-model","messages":[{"role":"user","content":[{"type":"text","text":"mail jane.doe"},{"type":"text","text":"@example.com now"}]}]}'
code=$("${C[@]}" -o "$work/parts.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "e-mail over two content parts: status" "$code" 200
check "e-mail over two content parts: each piece masked" "$(json_content "$work/parts.json")" \
	"mail [REDACTED:EMAIL][REDACTED:EMAIL] now"
before=$(wc -l <"$work/echo.requests")
body='{"model":"test-model","messages":[{"role":"user","content":"my ssn is 123-45"},{"role":"user","content":"-6789, ok?"}]}'
code=$("${C[@]}" -o "$work/split-deny.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "SSN over two messages -> 403" "$code" 403
check "split SSN never reached the model" "$(wc -l <"$work/echo.requests")" "$before"
# tool-call arguments join the text values: an SSN with its last group in a tool call's
# arguments is denied; an e-mail address split so has its piece in the text masked (the echo
# shows the text values)
before=$(wc -l <"$work/echo.requests")
body='{"model":"test-model","messages":[{"role":"user","content":"my ssn is 123-45"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"s\":\"-6789\"}"}}]}]}'
code=$("${C[@]}" -o "$work/args-deny.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "SSN split into tool-call arguments -> 403" "$code" 403
check "SSN split into arguments never reached the model" "$(wc -l <"$work/echo.requests")" "$before"
body='{"model":"test-model","messages":[{"role":"user","content":"mail jane.doe"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"send","arguments":"{\"to\":\"@example.com\"}"}}]}]}'
code=$("${C[@]}" -o "$work/args.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "e-mail split into tool-call arguments: status" "$code" 200
check "e-mail split into tool-call arguments: the text's piece masked" "$(json_content "$work/args.json")" \
	"mail [REDACTED:EMAIL]"
# a value used as a member name of the arguments is inspected too, not only their values
before=$(wc -l <"$work/echo.requests")
body='{"model":"test-model","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"123-45-6789\":1}"}}]}]}'
code=$("${C[@]}" -o "$work/args-key.json" -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "SSN as a member name of tool-call arguments -> 403" "$code" 403
check "SSN as a member name never reached the model" "$(wc -l <"$work/echo.requests")" "$before"

# -- a response deny mid-stream: error event, then [DONE]; nothing of the key
"${C[@]}" -N -D "$work/rd.hdr" -o "$work/rd.sse" -d "$(printf "$stream" deny-model)" \
	"$plain/v1/chat/completions"
check "mid-stream deny: events are JSON" "$(sse_bad "$work/rd.sse")" 0
grep -q '^data: {"error":{' "$work/rd.sse" && ok "error event sent" || fail "no error event: $(cat "$work/rd.sse")"
tail -n 2 "$work/rd.sse" | grep -q '^data: \[DONE\]' && ok "[DONE] after the error" || fail "no [DONE] at the end"
text=$(sse_text "$work/rd.sse")
case "$text" in
Starting*) ok "text before the value was delivered ($text)" ;;
*) fail "nothing delivered before the deny: '$text'" ;;
esac
grep -q 'AKIA' "$work/rd.sse" && fail "key fragment reached the client" || ok "no key fragment reached the client"
grep -q 'more text follows' "$work/rd.sse" && fail "text after the deny reached the client" || ok "nothing after the deny"
line=$(audit_of "$(rid "$work/rd.hdr")")
echo "$line" | grep -q '"decision":"deny"' && echo "$line" | grep -q '"type":"aws_access_key","count":1' &&
	ok "audit: deny with aws_access_key:1" || fail "audit of the response deny: $line"
grep -qi '^transfer-encoding: chunked' "$work/rd.hdr" && ok "an inspected stream is still sent chunked" ||
	fail "stream framing: $(cat "$work/rd.hdr")"

# -- a non-streamed JSON response is held whole, its head with it: a deny is a 403 with the
# error object a denied request gets (no 200, nothing of the text), audited as a deny with
# the response's findings
plain_body='{"model":"%s","messages":[{"role":"user","content":"go"}]}'
hdr_of() { sed -n "s/^$2: *\\(.*[^ ]\\) *\$/\\1/Ip" "$1" | tr -d '\r'; }
code=$("${C[@]}" -D "$work/jd.hdr" -o "$work/jd.json" -w '%{http_code}' \
	-d "$(printf "$plain_body" deny-model)" "$plain/v1/chat/completions")
check "non-streamed response deny -> 403" "$code" 403
check "403 error type" "$(perl -MJSON::PP -0777 -ne 'print decode_json($_)->{error}{type}' "$work/jd.json")" \
	permission_denied
check "403 names the detector" "$(perl -MJSON::PP -0777 -ne 'print decode_json($_)->{error}{message}' "$work/jd.json")" \
	"response denied by content inspection: aws_access_key detected"
check "403 error carries the request id" \
	"$(perl -MJSON::PP -0777 -ne 'print decode_json($_)->{error}{request_id}' "$work/jd.json")" "$(rid "$work/jd.hdr")"
grep -q -e 'AKIA' -e 'Starting the answer' -e 'choices' "$work/jd.json" && fail "the denied text reached the client" ||
	ok "nothing of the denied answer reached the client"
check "no other status line before the 403" "$(grep -c '^HTTP/' "$work/jd.hdr")" 1
line=$(audit_of "$(rid "$work/jd.hdr")")
echo "$line" | grep -q '"status":403' && echo "$line" | grep -q '"decision":"deny"' &&
	echo "$line" | grep -q '"type":"aws_access_key","count":1' && echo "$line" | grep -q '"inspect":"prompt:none response:deny"' &&
	ok "audit: 403 deny with aws_access_key:1" || fail "audit of the non-streamed deny: $line"

# -- ... allowed and redacted: the masked body with its own Content-Length, not chunked (the
# upstream's length was that of the unmasked text)
out=$("${C[@]}" -D "$work/jr.hdr" -o "$work/jr.json" -w '%{http_code} %{size_download}' \
	-d "$(printf "$plain_body" card-model)" "$plain/v1/chat/completions")
check "redacted JSON response: status" "${out% *}" 200
check "redacted JSON response: text" "$(json_content "$work/jr.json")" "Card [REDACTED:PAYMENT_CARD]."
check "redacted JSON response: Content-Length is the body's" "$(hdr_of "$work/jr.hdr" Content-Length)" "${out#* }"
check "redacted JSON response: not chunked" "$(hdr_of "$work/jr.hdr" Transfer-Encoding)" ""
check "redacted JSON response: Content-Type kept" "$(hdr_of "$work/jr.hdr" Content-Type)" "application/json"
check "redacted JSON response: one X-Request-Id" "$(grep -ci '^x-request-id:' "$work/jr.hdr")" 1
out=$("${C[@]}" -0 -D "$work/jr10.hdr" -o "$work/jr10.json" -w '%{http_code} %{size_download}' \
	-d "$(printf "$plain_body" card-model)" "$plain/v1/chat/completions")
check "HTTP/1.0 client: redacted JSON response" "$(json_content "$work/jr10.json")" "Card [REDACTED:PAYMENT_CARD]."
check "HTTP/1.0 client: Content-Length is the body's" "$(hdr_of "$work/jr10.hdr" Content-Length)" "${out#* }"

# -- pipelined on one connection: a deny, a redacted answer, a deny, an HTTP/1.0-style last
# one that closes; the answers come in order, each framed by its Content-Length
# pipeline PORT REQ...: sends the requests (MODEL or MODEL:close) in one write, prints
# "STATUS CONTENT" per answer (CONTENT: choices[0].message.content, or error.type)
pipeline() {
	python3 - "$@" <<'PY'
import json, socket, sys
port, key = int(sys.argv[1]), sys.argv[2]
reqs = b""
for m in sys.argv[3:]:
    model, _, close = m.partition(":")
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "go"}]}).encode()
    reqs += (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key.encode() +
             b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
             (b"\r\nConnection: close" if close else b"") + b"\r\n\r\n" + body)
s = socket.create_connection(("127.0.0.1", port), timeout=20)
s.sendall(reqs)
data = b""
while True:
    k = s.recv(65536)
    if not k:
        break
    data += k
while data:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split()[1].decode()
    fields = {l.split(b":", 1)[0].strip().lower(): l.split(b":", 1)[1].strip() for l in lines[1:]}
    if b"content-length" not in fields:
        print(status, "no Content-Length")
        break
    n = int(fields[b"content-length"])
    j = json.loads(rest[:n])
    print(status, j["choices"][0]["message"]["content"] if "choices" in j else j["error"]["type"])
    data = rest[n:]
PY
}
pipeline "$PORT2" "$ALICE" deny-model card-model deny-model card-model:close >"$work/pipe.out" 2>&1
check "pipelined answers after a deny, in order" "$(paste -sd '|' "$work/pipe.out")" \
	"403 permission_denied|200 Card [REDACTED:PAYMENT_CARD].|403 permission_denied|200 Card [REDACTED:PAYMENT_CARD]."
# ... and keep-alive with curl: one connection for a deny and the next request
out=$("${C[@]}" -o /dev/null -w '%{http_code} %{num_connects}\n' -d "$(printf "$plain_body" deny-model)" \
	"$plain/v1/chat/completions" --next -H "Authorization: Bearer $ALICE" -o /dev/null \
	-w '%{http_code} %{num_connects}\n' -d "$(printf "$plain_body" card-model)" "$plain/v1/chat/completions")
check "keep-alive: a deny, then the next request on the same connection" "$(echo $out)" "403 1 200 0"

# -- a JSON body over the 4 MiB held for inspection: 502 (nothing was sent yet), audited as an
# error; the connection goes on serving
out=$("${C[@]}" -D "$work/big.hdr" -o "$work/big.json" -w '%{http_code} %{num_connects}\n' \
	-d "$(printf "$plain_body" big-model)" "$plain/v1/chat/completions" --next -H "Authorization: Bearer $ALICE" \
	-o /dev/null -w '%{http_code} %{num_connects}\n' -d "$(printf "$plain_body" card-model)" "$plain/v1/chat/completions")
check "JSON body over 4 MiB: 502, then the next request on the same connection" "$(echo $out)" "502 1 200 0"
check "502 error type" "$(perl -MJSON::PP -0777 -ne 'print decode_json($_)->{error}{type}' "$work/big.json")" upstream_error
line=$(audit_of "$(rid "$work/big.hdr")")
echo "$line" | grep -q '"status":502' && echo "$line" | grep -q '"decision":"error"' &&
	echo "$line" | grep -q '"reason":"upstream response body over the 4 MiB held for inspection"' &&
	ok "audit: 502 error for the oversized body" || fail "audit of the oversized body: $line"

# -- a content-encoded answer cannot be inspected: refused at its head with a 502 (fail
# closed), nothing of it sent (one status line), audited as a deny naming the coding; the
# client connection goes on serving (the upstream one, its body unread, is closed)
out=$("${C[@]}" -D "$work/gz.hdr" -o "$work/gz.json" -w '%{http_code} %{num_connects}\n' -H 'X-Raw: gzip' \
	-d "$(printf "$plain_body" raw-model)" "$plain/v1/chat/completions" --next -H "Authorization: Bearer $ALICE" \
	-o "$work/gz-next.json" -w '%{http_code} %{num_connects}\n' -d "$(printf "$plain_body" raw-model)" \
	"$plain/v1/chat/completions")
check "gzip answer: 502, then the next request on the same connection" "$(echo $out)" "502 1 200 0"
check "gzip answer: no other status line" "$(grep -c '^HTTP/' "$work/gz.hdr")" 1
check "gzip answer: no Content-Encoding to the client" "$(hdr_of "$work/gz.hdr" Content-Encoding)" ""
GZ_WHY="response under Content-Encoding gzip not inspected: refused (fail closed)"
check "gzip answer: the error" \
	"$(perl -MJSON::PP -0777 -ne '$e = decode_json($_)->{error}; print "$e->{type}|$e->{message}|$e->{request_id}"' "$work/gz.json")" \
	"upstream_error|$GZ_WHY|$(rid "$work/gz.hdr")"
check "the request after it: the upstream's answer" "$(json_content "$work/gz-next.json")" "raw ok"
line=$(audit_of "$(rid "$work/gz.hdr")")
echo "$line" | grep -q '"status":502' && echo "$line" | grep -q '"decision":"deny"' &&
	echo "$line" | grep -qF "\"reason\":\"$GZ_WHY\"" &&
	ok "audit: 502 deny naming gzip" || fail "audit of the gzip answer: $line"
out=$("${C[@]}" -0 -D "$work/gz10.hdr" -o "$work/gz10.json" -w '%{http_code}' -H 'X-Raw: gzip' \
	-d "$(printf "$plain_body" raw-model)" "$plain/v1/chat/completions")
check "HTTP/1.0 client: gzip answer is a 502 with the error" \
	"$out $(grep -c '^HTTP/' "$work/gz10.hdr") $(perl -MJSON::PP -0777 -ne 'print decode_json($_)->{error}{message}' "$work/gz10.json")" \
	"502 1 $GZ_WHY"
# ... a stream too (its head waits for the same decision): under a second Content-Encoding
# field, br
code=$("${C[@]}" -N -D "$work/br.hdr" -o "$work/br.json" -w '%{http_code}' -H 'X-Raw: br-sse' \
	-d "$(printf "$stream" raw-model)" "$plain/v1/chat/completions")
check "br stream: 502 with one status line" "$code $(grep -c '^HTTP/' "$work/br.hdr")" "502 1"
check "br stream: the error" "$(perl -MJSON::PP -0777 -ne 'print decode_json($_)->{error}{message}' "$work/br.json")" \
	"response under Content-Encoding br not inspected: refused (fail closed)"
# ... an answer without a body has nothing to inspect: forwarded
check "204 under Content-Encoding: forwarded" "$("${C[@]}" -o /dev/null -w '%{http_code}' -H 'X-Raw: gzip-204' \
	-d "$(printf "$plain_body" raw-model)" "$plain/v1/chat/completions")" 204

# -- Accept-Encoding upstream: identity while the response is inspected (a compressed answer
# could not be read), the client's own value (or none) otherwise. One field either way.
# ae MODEL PROBE [curl args]: the Accept-Encoding fields the model saw for the request tagged
# PROBE, joined by ";" ("" when none).
ae() {
	local m=$1 probe=$2
	shift 2
	"${C[@]}" -o /dev/null -H "X-Probe: $probe" "$@" \
		-d "{\"model\":\"$m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" \
		"$plain/v1/chat/completions"
	grep -F "| X-Probe: $probe" "$work/echo.heads" | tr '|' '\n' | sed -n 's/^ *\(Accept-Encoding: .*[^ ]\) *$/\1/Ip' |
		paste -sd ';'
}
check "inspected response: identity asked upstream for a gzip client" \
	"$(ae test-model ae-insp-gzip -H 'Accept-Encoding: gzip, br')" "Accept-Encoding: identity"
check "inspected response: identity asked upstream when the client asked nothing" \
	"$(ae test-model ae-insp-none)" "Accept-Encoding: identity"
check "response not inspected: the client's Accept-Encoding passed on" \
	"$(ae plain-model ae-plain-gzip -H 'Accept-Encoding: gzip, br')" "Accept-Encoding: gzip, br"
check "response not inspected: none when the client sent none" "$(ae plain-model ae-plain-none)" ""

# -- the proxy keeps serving after a deny
code=$("${C[@]}" -o /dev/null -w '%{http_code}' -d "$(printf "$stream" card-model)" "$plain/v1/chat/completions")
check "served after a mid-stream deny" "$code" 200

# -- reload: the engine is rebuilt with the policy. A custom detector Hyperscan refuses (a
# back-reference) fails the reload and the old policy (and engine) stays in force; a good one
# is in force after SIGHUP.
reloads() { grep -c "$1" "$work/custos.log"; }
cp "$work/policy.yaml" "$work/policy.good"
cat >>"$work/policy.yaml" <<'POL'
detectors:
  twice:
    patterns: ['(ab)\1x']
POL
sed -i 's/prompt: { email: redact,/prompt: { twice: redact, email: redact,/' "$work/policy.yaml"
kill -HUP "$CU_PID"
wait_log 'reload failed' 1
check "reload with a refused detector pattern fails" "$(reloads 'reload failed')" 1
grep 'reload failed' "$work/custos.log" | grep -q 'twice' && ok "the failure names the detector" ||
	fail "reload failure: $(grep 'reload failed' "$work/custos.log")"
body='{"model":"test-model","messages":[{"role":"user","content":"mail bob@example.com"}]}'
"${C[@]}" -o "$work/r1.json" -d "$body" "$plain/v1/chat/completions"
check "old policy still redacts after the failed reload" "$(json_content "$work/r1.json")" "mail [REDACTED:EMAIL]"
cp "$work/policy.good" "$work/policy.yaml"
cat >>"$work/policy.yaml" <<'POL'
detectors:
  employee_id:
    patterns: ['\bEMP-[0-9]{6}\b']
POL
sed -i 's/prompt: { email: redact,/prompt: { employee_id: redact, email: deny,/' "$work/policy.yaml"
kill -HUP "$CU_PID"
wait_log 'reloaded' 1
check "reload with a custom detector" "$(reloads 'reloaded')" 1
code=$("${C[@]}" -o /dev/null -w '%{http_code}' -d "$body" "$plain/v1/chat/completions")
check "after reload: e-mail now denied" "$code" 403
body='{"model":"test-model","messages":[{"role":"user","content":"staff EMP-004211 here"}]}'
"${C[@]}" -o "$work/r2.json" -d "$body" "$plain/v1/chat/completions"
check "after reload: custom detector redacts" "$(json_content "$work/r2.json")" "staff [REDACTED:EMPLOYEE_ID] here"

# -- no value anywhere in the audit trail
# Every string in every event, except the hex ones (hashes, chain links, request ids can hold
# "4111" by chance), RFC 3339 times (a microsecond fraction such as .341117 holds it too) and
# loopback address:port values (the client's or the fixture's ephemeral port, 127.0.0.1:54111);
# JSON numbers (durations, byte counts, pids) are not searched either: a value would be a string.
perl -MJSON::PP -MB -ne 'my $j = eval { decode_json($_) } or next;
	sub walk { my ($v, $k) = @_;
		if (ref $v eq "HASH") { walk($v->{$_}, $_) for keys %$v; return }
		if (ref $v eq "ARRAY") { walk($_, $k) for @$v; return }
		return unless defined $v;
		my $f = B::svref_2object(\$v)->FLAGS;
		return if ($f & (B::SVf_IOK | B::SVf_NOK)) && !($f & B::SVf_POK);
		return if $v =~ /^[0-9a-f]{32,}$/;
		return if $v =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;
		return if $v =~ /^(127\.\d+\.\d+\.\d+|\[::1\]):\d+$/;
		print "$k=$v\n" }
	walk($j, "")' "$work"/audit/*.jsonl >"$work/audit.strings"
[ -s "$work/audit.strings" ] && ok "audit strings extracted ($(wc -l <"$work/audit.strings"))" || fail "no audit strings"
for v in "$CARD" 4111 bob@example.com carol jane 123-45-6789 "$KEY" 10.1.2.3 EMP-004211; do
	n=$(grep -c -- "$v" "$work/audit.strings")
	check "audit trail free of '$v'" "$n" 0
	[ "$n" = 0 ] || grep -- "$v" "$work/audit.strings" | head -5 | sed 's/^/    /'
done

# -- clean stop: no sanitizer report (sanitized builds) in custos' log
kill -TERM "$CU_PID"
wait "$CU_PID" 2>/dev/null
check "custos exit status after SIGTERM" "$?" 0
n=$(grep -cE 'AddressSanitizer|LeakSanitizer|runtime error' "$work/custos.log")
check "no sanitizer report" "$n" 0

[ "$fails" -eq 0 ] || exit 1
echo "all content inspection checks passed"
