"""Fuzzing meshc from outside: generated valid meshes judged by the real Envoy, and damaged copies of the
example policies judged by the CLI's exit code and diagnostics.

- `known_open.py`: generator branches whose failures are known and not fixed yet (reviewed list);
- `edges.py`: edge values (durations, integers, strings, regexes) as Hypothesis strategies;
- `meshgen.py`: the strategy of valid meshes over every feature of the language;
- `parts.py`, `policyparts.py`, `edgeparts.py`: parts of a mesh (matches, route rules, percentages and weights;
  TrafficPolicies, AuthorizationPolicies; Gateways, ExternalServices, egress);
- `mutate.py`: the mutation fuzzer over policies/*/;
- `judge.py`: outcome classes of one build (ok, positioned error, traceback, exit 3, Envoy rejection);
- `run.py`: `make fuzz`, the large run with figures.
"""
