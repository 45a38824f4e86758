#!/usr/bin/env python3
"""Generates equivalent policies for custos and Cedar, and one request set for both.

gen.py OUTDIR N [REQUESTS]  writes OUTDIR/policy.yaml, OUTDIR/policy.cedar,
OUTDIR/requests.jsonl (custos request contexts) and OUTDIR/cedar_requests.json.

The rule mix (N rules, deterministic):
  80% allow  principal == user, action == route, resource == model, body_size <= limit
  10% allow  principal in group, action == route, resource == model
  10% forbid principal in group, resource == model, body_size > limit
Users are in one group each; the request's entities (user, its group, the model) are all
that Cedar gets, as a proxy would pass them.
"""
import json
import os
import random
import sys

ROUTES = ["POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings",
          "GET /v1/models"]
N_MODELS = 20
N_GROUPS = 10


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    n_req = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    rnd = random.Random(n * 7919 + 1)
    n_users = max(5, n // 2)
    os.makedirs(out, exist_ok=True)
    users = [f"u{i}" for i in range(n_users)]
    group_of = {u: f"g{i % N_GROUPS}" for i, u in enumerate(users)}
    models = [f"m{i}" for i in range(N_MODELS)]
    y = ["version: 1", "mode: enforce", "principals:"]
    for u in users:
        y.append(f"  {u}: {{ match: {{ cert_san_uri: \"spiffe://corp/{u}\" }}, groups: [{group_of[u]}] }}")
    y.append("models:")
    for i, m in enumerate(models):
        y.append(f"  {m}: {{ isolation: {['process', 'vm'][i % 2]} }}")
    y.append("rules:")
    cedar = []
    targets = []  # (user, route, model) of the per-user allows, for requests that hit them
    for i in range(n):
        kind = i % 10
        m = models[rnd.randrange(N_MODELS)]
        r = ROUTES[rnd.randrange(len(ROUTES))]
        limit = rnd.choice([65536, 262144, 1048576, 4194304])
        if kind < 8:
            u = users[i % n_users]
            targets.append((u, r, m))
            y.append(f"  - id: r{i}\n    effect: allow\n    when: {{ direction: ingress, principal: {u}, "
                     f"route: \"{r}\", model: {m}, body_size: {{ at_most: {limit} }} }}")
            cedar.append(f'@id("r{i}")\npermit(principal == User::"{u}", action == Action::"{r}", '
                         f'resource == Model::"{m}") when {{ context.body_size <= {limit} }};')
        elif kind == 8:
            g = f"g{rnd.randrange(N_GROUPS)}"
            y.append(f"  - id: r{i}\n    effect: allow\n    when: {{ direction: ingress, principal.groups: {g}, "
                     f"route: \"{r}\", model: {m} }}")
            cedar.append(f'@id("r{i}")\npermit(principal in Group::"{g}", action == Action::"{r}", '
                         f'resource == Model::"{m}");')
        else:
            g = f"g{rnd.randrange(N_GROUPS)}"
            y.append(f"  - id: r{i}\n    effect: deny\n    when: {{ direction: ingress, principal.groups: {g}, "
                     f"model: {m}, body_size: {{ above: {limit} }} }}")
            cedar.append(f'@id("r{i}")\nforbid(principal in Group::"{g}", action, '
                         f'resource == Model::"{m}") when {{ context.body_size > {limit} }};')
    with open(os.path.join(out, "policy.yaml"), "w") as f:
        f.write("\n".join(y) + "\n")
    os.chmod(os.path.join(out, "policy.yaml"), 0o644)
    with open(os.path.join(out, "policy.cedar"), "w") as f:
        f.write("\n".join(cedar) + "\n")
    reqs, creqs = [], []
    for k in range(n_req):
        # half the requests aim at a rule (so allows and denies both happen), half are random
        if k % 2 == 0:
            u, r, m = targets[rnd.randrange(len(targets))]
        else:
            u = users[rnd.randrange(n_users)]
            m = models[rnd.randrange(N_MODELS)]
            r = ROUTES[rnd.randrange(len(ROUTES))]
        body = rnd.choice([100, 10000, 100000, 500000, 2000000, 8000000])
        reqs.append(json.dumps({"direction": "ingress", "principal": u, "model": m,
                                "route": r, "body_size": body}))
        creqs.append({"principal": {"type": "User", "id": u},
                      "action": {"type": "Action", "id": r},
                      "resource": {"type": "Model", "id": m},
                      "context": {"body_size": body},
                      "entities": [
                          {"uid": {"type": "User", "id": u}, "attrs": {},
                           "parents": [{"type": "Group", "id": group_of[u]}]},
                          {"uid": {"type": "Group", "id": group_of[u]}, "attrs": {}, "parents": []},
                          {"uid": {"type": "Model", "id": m}, "attrs": {}, "parents": []}]})
    with open(os.path.join(out, "requests.jsonl"), "w") as f:
        f.write("\n".join(reqs) + "\n")
    with open(os.path.join(out, "cedar_requests.json"), "w") as f:
        json.dump(creqs, f)


if __name__ == "__main__":
    main()
