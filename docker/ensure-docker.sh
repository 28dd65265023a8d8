#!/usr/bin/env bash
# Make sure a Docker engine answers: install Debian's docker.io and
# docker-compose when missing, start dockerd when no daemon answers (no bridge
# network, no iptables: containers use host networking on loopback only).
# Prints nothing on success; writes the pid of a dockerd it started to
# $DOCKERD_PIDFILE so `docker/stop-docker.sh` can stop exactly that.
set -euo pipefail
pidfile=${DOCKERD_PIDFILE:-.dockerd.pid}
if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker-compose >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "ensure-docker: docker.io/docker-compose are missing and installing them needs root" >&2; exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq docker.io docker-compose >/dev/null
fi
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-docker: no Docker daemon answers and starting one needs root" >&2; exit 1
fi
log=${DOCKERD_LOG:-.dockerd.log}
dockerd --bridge=none --iptables=false --ip-masq=false >"$log" 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  if ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then break; fi
  sleep 1
done
echo "ensure-docker: dockerd did not come up; its log:" >&2
tail -n 30 "$log" >&2
exit 1
