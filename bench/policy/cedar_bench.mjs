// Cedar's own evaluator (npm @cedar-policy/cedar-wasm) on the generated policy set: the set is
// pre-parsed once (preparsePolicySet), each call passes only the request's entities. Warmed up
// first: V8 optimises the wasm only after a few thousand calls.
// usage: node cedar_bench.mjs DIR SECONDS EQ_N   -> one JSON line
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const peers = process.env.CEDAR_PEERS;
const cedar = require(`${peers}/node_modules/@cedar-policy/cedar-wasm/nodejs/cedar_wasm.js`);

const dir = process.argv[2];
const seconds = Number(process.argv[3] || 3);
const eqn = Number(process.argv[4] || 2000);
const text = readFileSync(`${dir}/policy.cedar`, "utf8");
const reqs = JSON.parse(readFileSync(`${dir}/cedar_requests.json`, "utf8"));

const t0 = process.hrtime.bigint();
const pre = cedar.preparsePolicySet("bench", { staticPolicies: text });
const parseMs = Number(process.hrtime.bigint() - t0) / 1e6;
if (pre.type !== "success") {
	console.error(JSON.stringify(pre.errors).slice(0, 2000));
	process.exit(1);
}

function decide(r) {
	const a = cedar.statefulIsAuthorized({
		principal: r.principal, action: r.action, resource: r.resource,
		context: r.context, entities: r.entities, preparsedPolicySetId: "bench",
	});
	if (a.type !== "success")
		throw new Error(JSON.stringify(a.errors));
	return a.response.decision === "allow";
}

// the decision vector over the request set, for the equivalence check with custos
let allows = 0, digest = 2166136261;
for (const r of reqs.slice(0, eqn)) {
	const ok = decide(r);
	allows += ok ? 1 : 0;
	digest = Math.imul(digest ^ (ok ? 1 : 0), 16777619) >>> 0;
}

// warm-up: at least 5,000 calls or 25% of the time budget, whichever comes first
const warmEnd = process.hrtime.bigint() + BigInt(Math.round(seconds * 0.25 * 1e9));
for (let i = 0; i < 5000 && process.hrtime.bigint() < warmEnd; i++)
	decide(reqs[i % reqs.length]);

const lat = [];
const end = process.hrtime.bigint() + BigInt(Math.round(seconds * 1e9));
let n = 0;
const start = process.hrtime.bigint();
for (;;) {
	const a = process.hrtime.bigint();
	decide(reqs[n % reqs.length]);
	const b = process.hrtime.bigint();
	lat.push(Number(b - a));
	n++;
	if ((n & 15) === 0 && b >= end)
		break;
}
const elapsed = Number(process.hrtime.bigint() - start) / 1e9;
lat.sort((x, y) => x - y);
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] / 1000;
console.log(JSON.stringify({
	n, decisions_per_s: n / elapsed, p50_us: q(0.5), p99_us: q(0.99),
	parse_ms: parseMs, allows, digest, requests: reqs.length,
	cedar: cedar.getCedarVersion(),
}));
