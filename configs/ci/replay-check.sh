#!/usr/bin/env bash
# Check an export setup in CI: validate recorded trace files, then replay them to the backend and
# fail the job unless the backend accepted every span.
#
#   configs/ci/replay-check.sh [TRACES]      TRACES: files or a directory (default: traces/)
#
# Where to send (the backend's secrets come from CI variables, never from this script):
#   REPLAY_TARGET    a target of the config (TFGW_CONFIG, default configs/ci/tfgw.toml) whose
#                    secrets are env:VAR references, e.g. arize with ARIZE_SPACE_ID, ARIZE_API_KEY
#   REPLAY_ENDPOINT  or an OTLP endpoint; then REPLAY_PROTOCOL (default http/protobuf) and
#                    REPLAY_TOKEN, sent as "authorization: $REPLAY_TOKEN" when set
#   REPLAY_TIMEOUT   seconds a batch may keep failing before the backend counts as down (60)
#   REPLAY_VERDICT   where the JSON verdict goes (replay-verdict.json)
#
# Exit: 0 all accepted; 1 a check error, a rejected span or a backend down; 2 bad input or usage.
set -euo pipefail

traces=("${@:-traces/}")
config="${TFGW_CONFIG:-configs/ci/tfgw.toml}"
verdict="${REPLAY_VERDICT:-replay-verdict.json}"

# 1. the files follow OTLP/JSON and the OpenInference / GenAI conventions
tfgw traces check "${traces[@]}"

# 2. where to, and how: fresh ids and times, so every run shows up as new traces
args=(--rebase-time --new-ids --timeout "${REPLAY_TIMEOUT:-60}" --json)
if [[ -n "${REPLAY_ENDPOINT:-}" ]]; then
    args+=(--endpoint "$REPLAY_ENDPOINT" --protocol "${REPLAY_PROTOCOL:-http/protobuf}")
    if [[ -n "${REPLAY_TOKEN:-}" ]]; then
        # env:VAR keeps the token out of the process list; --header "authorization=$REPLAY_TOKEN" works too
        args+=(--header "authorization=env:REPLAY_TOKEN")
    fi
else
    args+=(--config "$config" --to "${REPLAY_TARGET:?set REPLAY_TARGET (a target in $config) or REPLAY_ENDPOINT}")
fi

# 3. replay; keep the verdict for the job's artifacts whatever the outcome
status=0
tfgw replay "${traces[@]}" "${args[@]}" >"$verdict" || status=$?
cat "$verdict"
exit "$status"
