#!/bin/sh
# The shell worker of README's console session: `rill work emails -- examples/send-email.sh`. The job's JSON
# is on stdin; exit 0 completes it (stdout is its result), anything else fails the attempt (stderr is the error).
job=$(cat)
case "$job" in *@invalid*) echo "no MX record for invalid" >&2; exit 1 ;; esac
case "$job" in *@slow.example*) sleep "${SLOW_SECONDS:-30}" ;; esac
echo '{"sent":true}'
