#!/usr/bin/env bash
# Stop the dockerd that ensure-docker.sh started (if it started one).
pidfile=${DOCKERD_PIDFILE:-.dockerd.pid}
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
kill "$pid" 2>/dev/null || true
for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
rm -f "$pidfile"
