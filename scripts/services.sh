#!/usr/bin/env bash
# Make sure mailgw's backing services run on loopback, installing them if needed (Debian 12, root,
# no systemd): PostgreSQL on 127.0.0.1:5432 (postgresql://postgres@127.0.0.1:5432/mailgw, trust
# auth) and RabbitMQ on 127.0.0.1:5672 (guest/guest). Idempotent; ~0.1 s when all is up already.
set -euo pipefail
PG_PORT=5432 AMQP_PORT=5672 DB=mailgw
say() { echo "services: $*"; }
die() { echo "services: $*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_install() { # packages...
  [[ $(id -u) -eq 0 ]] || die "need root to install $*"
  # policy-rc.d exiting 101 stops the package scripts from starting the system daemons (which
  # would bind wherever the stock config says). Only added if the image lacks one; removed after.
  local own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  { [[ -n $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -print -quit) ]] || apt-get update -q; } \
    && apt-get install -y -q --no-install-recommends "$@" >/tmp/services-apt.log 2>&1 \
    || { apt-get update -q && apt-get install -y -q --no-install-recommends "$@" >/tmp/services-apt.log 2>&1; } \
    || rc=$?
  if (( own_policy )); then rm -f /usr/sbin/policy-rc.d; fi
  (( rc == 0 )) || { tail -n 20 /tmp/services-apt.log >&2; die "apt-get install $* failed"; }
  say "installed $*"
}

# --- PostgreSQL ------------------------------------------------------------------------------
psql_tcp() { psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -w -tA "$@"; }
if ! port_open "$PG_PORT"; then
  installed postgresql || apt_install postgresql
  ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  if [[ -z $(ls /etc/postgresql 2>/dev/null) ]]; then
    pg_createcluster "$ver" main >/dev/null && say "created cluster $ver/main"
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  # Debian's default listen_addresses = 'localhost' (127.0.0.1 and ::1 only): leave it.
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start </dev/null >/dev/null 2>&1 \
    || pg_ctlcluster --skip-systemctl-redirect "$ver" main status >/dev/null 2>&1 \
    || die "pg_ctlcluster $ver main start failed (see /var/log/postgresql/)"
  for (( i = 0; i < 300; i++ )); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.1; done
  pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || die "PostgreSQL not ready on 127.0.0.1:$PG_PORT after 30 s"
  say "started PostgreSQL $ver on 127.0.0.1:$PG_PORT"
fi
if ! psql_tcp -c 'select 1' >/dev/null 2>&1; then
  # A fresh Debian cluster asks for scram-sha-256 on TCP (and postgres has no password).
  # LOCAL DEVELOPMENT ONLY: trust every loopback TCP connection, then reload.
  [[ $(id -u) -eq 0 ]] || die "cannot connect as postgres@127.0.0.1 and not root to fix pg_hba.conf"
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  hba=/etc/postgresql/$ver/main/pg_hba.conf
  sed -ri 's#^(host[[:space:]]+all[[:space:]]+all[[:space:]]+(127\.0\.0\.1/32|::1/128)[[:space:]]+)[^[:space:]]+#\1trust#' "$hba"
  grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba" \
    || sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null
  for (( i = 0; i < 50; i++ )); do psql_tcp -c 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  psql_tcp -c 'select 1' >/dev/null || die "still cannot connect as postgres@127.0.0.1 (see $hba)"
  say "set trust auth for 127.0.0.1/::1 in $hba"
fi
if [[ $(psql_tcp -c "select 1 from pg_database where datname = '$DB'") != 1 ]]; then
  psql_tcp -c "create database $DB" && say "created database $DB"
else
  say "PostgreSQL ok: postgresql://postgres@127.0.0.1:$PG_PORT/$DB"
fi

# --- RabbitMQ --------------------------------------------------------------------------------
# AMQP 0-9-1 check without a client library: send the protocol header and expect a method frame
# (type 1) on channel 0 -- Connection.Start -- in reply.
amqp_ok() {
  [[ $(timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$AMQP_PORT"'; printf "AMQP\0\0\011\001" >&3
        head -c 3 <&3' 2>/dev/null | od -An -tx1 | tr -d ' \n') == 010000 ]]
}
# rabbitmq-server drops to the rabbitmq user through su, which resets the descriptor limit to
# 1024; the broker's file-handle budget (quorum queues, connections) is derived from it, and
# when it runs out the broker accepts TCP but never greets. rabbitmq-env.conf is sourced by the
# broker's own start script, so raising the limit there survives su.
rabbit_env_limit() {
  mkdir -p /etc/rabbitmq
  grep -qs 'ulimit -n' /etc/rabbitmq/rabbitmq-env.conf || printf '%s\n' \
    '# mailgw: quorum queues and test connections need more than 1024 descriptors' \
    'ulimit -n "$(ulimit -Hn)" 2>/dev/null || true' >> /etc/rabbitmq/rabbitmq-env.conf
}
rabbit_soft_limit() { # the running broker's soft descriptor limit, or 0 if unknown
  local pidfile pid
  pidfile=$(ls /var/lib/rabbitmq/mnesia/*.pid 2>/dev/null | head -n1)
  [[ -n $pidfile ]] && pid=$(cat "$pidfile") && [[ -r /proc/$pid/limits ]] || { echo 0; return; }
  awk '/Max open files/ {print $4}' "/proc/$pid/limits"
}
rabbit_stop() { # by the pid file: rabbitmqctl would hang on a wedged node
  local pidfile pid i
  pidfile=$(ls /var/lib/rabbitmq/mnesia/*.pid 2>/dev/null | head -n1)
  [[ -n $pidfile ]] || die "RabbitMQ on :$AMQP_PORT has no pid file to stop it by"
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for (( i = 0; i < 300; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  for (( i = 0; i < 100; i++ )); do port_open "$AMQP_PORT" || break; sleep 0.1; done
}
rabbit_start() {
  installed rabbitmq-server || apt_install rabbitmq-server
  rabbit_env_limit
  # Loopback only: AMQP listener, Erlang distribution and epmd (only written when not configured).
  mkdir -p /etc/rabbitmq
  grep -qs '^listeners\.tcp' /etc/rabbitmq/rabbitmq.conf \
    || echo "listeners.tcp.local = 127.0.0.1:$AMQP_PORT" >> /etc/rabbitmq/rabbitmq.conf
  grep -qs '^NODENAME' /etc/rabbitmq/rabbitmq-env.conf || cat >> /etc/rabbitmq/rabbitmq-env.conf <<'ENV'
NODENAME=rabbit@localhost
ERL_EPMD_ADDRESS=127.0.0.1
export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"
ENV
  # Quorum queues and many test connections need more than the common 1024 descriptors.
  ( ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    rabbitmq-server -detached </dev/null >/dev/null 2>&1 ) || die "rabbitmq-server -detached failed"
  for (( i = 0; i < 600; i++ )); do port_open "$AMQP_PORT" && amqp_ok && break; sleep 0.1; done
  amqp_ok || die "RabbitMQ not answering AMQP on 127.0.0.1:$AMQP_PORT after 60 s (see /var/log/rabbitmq/)"
  say "started RabbitMQ on 127.0.0.1:$AMQP_PORT"
}
amqp_answers() { # a few tries: a busy broker may be slow to greet
  local i
  for (( i = 0; i < 5; i++ )); do amqp_ok && return 0; sleep 1; done
  return 1
}
if port_open "$AMQP_PORT" && amqp_answers; then
  limit=$(rabbit_soft_limit)
  if [[ $limit =~ ^[0-9]+$ ]] && (( limit > 0 && limit < 4096 )) && [[ $(id -u) -eq 0 ]]; then
    say "RabbitMQ runs with only $limit file descriptors: restarting it with more"
    rabbit_env_limit
    rabbit_stop
    rabbit_start
  else
    say "RabbitMQ ok: amqp://guest:guest@127.0.0.1:$AMQP_PORT/"
  fi
elif port_open "$AMQP_PORT"; then
  say "RabbitMQ accepts TCP but does not answer AMQP (wedged): restarting it"
  rabbit_stop
  rabbit_start
else
  rabbit_start
fi
