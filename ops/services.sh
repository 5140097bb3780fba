#!/usr/bin/env bash
# Make sure PostgreSQL (5432), Redis (6379) and RabbitMQ (5672) answer on this machine,
# starting any that is down, and that promtool and prometheus are installed (Debian
# packages; installs them when missing and run as root).
set -euo pipefail

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local name=$1 port=$2
  for _ in $(seq 1 120); do
    if listening "$port"; then echo "$name is up on $port"; return 0; fi
    sleep 1
  done
  echo "$name did not come up on port $port" >&2
  return 1
}

apt_updated=""
ensure_package() {
  dpkg -s "$1" >/dev/null 2>&1 && return 0
  if [ -z "$apt_updated" ]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

if ! listening 5432; then
  ensure_package postgresql
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  wait_for PostgreSQL 5432
fi
if ! listening 6379; then
  ensure_package redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for Redis 6379
fi
if ! listening 5672; then
  ensure_package rabbitmq-server
  rabbitmq-server -detached
  wait_for RabbitMQ 5672
fi
# promtool tests the alert rules; the prometheus server scrapes a farm in the metrics tests
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  ensure_package prometheus
fi
# HAProxy stands in front of the two `web` hosts of the multi-host tests (tests/hosts.py)
if ! command -v haproxy >/dev/null; then
  ensure_package haproxy
fi
echo "services ready: PostgreSQL 5432, Redis 6379, RabbitMQ 5672"
