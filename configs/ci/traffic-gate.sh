#!/usr/bin/env bash
# Gate a change on the model traffic it causes (configs/ci/README.md): record a suite's traffic
# through tfgw once and commit the recording; in CI, answer the same requests from it
# (`tfgw serve --recorded`) and compare the run with the recording (`tfgw traces diff`).
#
#   configs/ci/traffic-gate.sh record -- SUITE...   once, with the real providers: the suite's
#                                                   traffic recorded into $RECORDING (commit it)
#   configs/ci/traffic-gate.sh check -- SUITE...    in CI: the suite answered from $RECORDING, the
#                                                   run compared with it; exit 1 if a gate holds
#
# SUITE is the command that sends the traffic (tests, an eval script). It reaches the gateway
# through OPENAI_BASE_URL and ANTHROPIC_BASE_URL, which this script sets for it.
#
#   TFGW_CONFIG   the gateway's config (configs/ci/traffic.toml): models, prices, [tracing] dir
#   TRACES        that [tracing] dir, where a run's traces go (.tfgw-ci/traces); cleared first
#   TFGW_PORT     that [server] port (8787)
#   RECORDING     the committed recording, gzipped trace files (ci/recording)
#   GATES         the --fail-if conditions, one per line (the defaults below)
#   DIFF_REPORT   where check writes the JSON report (traffic-diff.json)
#
# Exit: 0 no gate holds; 1 a gate holds or the suite failed; 2 bad input or usage.
set -euo pipefail

config="${TFGW_CONFIG:-configs/ci/traffic.toml}"
traces="${TRACES:-.tfgw-ci/traces}"
port="${TFGW_PORT:-8787}"
recording="${RECORDING:-ci/recording}"
report="${DIFF_REPORT:-traffic-diff.json}"
default_gates='error_rate > 0.01
requests < -5%
cost_per_request > +10%
tokens_out_per_request > +10%
finish_reason.length > +5%'
gates="${GATES:-$default_gates}"

usage() {
    echo "usage: $0 record|check -- SUITE..." >&2
    exit 2
}
[[ $# -ge 3 && ($1 == record || $1 == check) && $2 == -- ]] || usage
mode=$1
shift 2

gateway=""
stop_gateway() {
    # SIGTERM, then SIGKILL if it has not stopped within 15 s
    [[ -n $gateway ]] || return 0
    kill -TERM "$gateway" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$gateway" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$gateway" 2>/dev/null || true
    wait "$gateway" 2>/dev/null || true
    gateway=""
}
trap stop_gateway EXIT

start_gateway() {
    # `tfgw serve "$@"` in the background, ready within 30 s or the script fails
    rm -rf "$traces"
    tfgw serve --config "$config" "$@" &
    gateway=$!
    for _ in $(seq 300); do
        if curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
            return 0
        fi
        kill -0 "$gateway" 2>/dev/null || { echo "tfgw serve exited before it was ready" >&2; exit 2; }
        sleep 0.1
    done
    echo "tfgw serve was not ready on port $port within 30 s" >&2
    exit 2
}

run_suite() {
    OPENAI_BASE_URL="http://127.0.0.1:$port/v1" ANTHROPIC_BASE_URL="http://127.0.0.1:$port" "$@"
}

if [[ $mode == record ]]; then
    start_gateway
    run_suite "$@"
    stop_gateway
    # the recording replaces the last one whole: stale answers would hide a changed request
    rm -rf "$recording"
    mkdir -p "$recording"
    compgen -G "$traces/*.jsonl" >/dev/null || { echo "the suite sent no traffic through $traces" >&2; exit 2; }
    for segment in "$traces"/*.jsonl; do
        gzip -9 -c "$segment" >"$recording/$(basename "$segment").gz"
    done
    tfgw traces check "$recording"
    tfgw traces stats --dir "$traces" --by model --since 1w
    echo "recorded into $recording: commit it" >&2
    exit 0
fi

# check: no provider is called, but the config's env:VAR keys must resolve
export OPENAI_API_KEY="${OPENAI_API_KEY:-recorded-no-key}"
export ANTHROPIC_API_KEY="${ANTHROPIC_API_KEY:-recorded-no-key}"
start_gateway --recorded "$recording"
suite=0
run_suite "$@" || suite=$?
stop_gateway

args=()
while IFS= read -r gate; do
    [[ -n $gate ]] && args+=(--fail-if "$gate")
done <<<"$gates"
tfgw traces diff "$recording" "$traces"   # the table, for the job's log
status=0
tfgw traces diff "$recording" "$traces" --json "${args[@]}" >"$report" || status=$?
if [[ $suite -ne 0 ]]; then
    echo "the suite failed (exit $suite)" >&2
    exit 1
fi
exit "$status"
