#!/usr/bin/env bash
# Stop the mail lab that start.sh started (by its pid files) and delete the state dir.
#   MAILGW_LAB_DIR   same as for start.sh (default /dev/shm/mailgw-lab, also tries /tmp/mailgw-lab)
#   MAILGW_LAB_KEEP=1  keep the state dir (Maildirs, logs) for inspection
set -uo pipefail
if [[ -z ${MAILGW_LAB_DIR:-} ]]; then
  rc=0
  for d in /dev/shm/mailgw-lab /tmp/mailgw-lab; do
    [[ -d $d ]] && { MAILGW_LAB_DIR=$d "$0" || rc=1; }
  done
  exit $rc
fi
STATE=$MAILGW_LAB_DIR
log() { echo "mail-lab stop: $*"; }
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ $st != Z* ]]; }
group_alive() { ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { f = 1 } END { exit !f }'; }
# SIGTERM the master named by our pid file (what `postfix stop` / `doveadm stop` do). Both masters
# lead their own process group, so leftovers (e.g. a Dovecot lmtp child lingering in a shutdown
# timeout, or children of a SIGKILLed master) are ended through that group -- never by name.
stop_master() { # pidfile what
  local pid i
  [[ -s $1 ]] || return 0
  pid=$(head -n1 "$1" | tr -d ' ')
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  alive "$pid" || group_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null
  for (( i = 0; i < 30; i++ )); do alive "$pid" || break; sleep 0.05; done
  if group_alive "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null
    for (( i = 0; i < 40; i++ )); do group_alive "$pid" || break; sleep 0.05; done
    group_alive "$pid" && kill -KILL -- "-$pid" 2>/dev/null
  fi
  alive "$pid" && kill -KILL "$pid" 2>/dev/null
  log "$what stopped (pid $pid)"
}
[[ -d $STATE ]] || { log "nothing to do ($STATE absent)"; exit 0; }
what=postfix stop_master "$STATE/postfix/spool/pid/master.pid"
what=dovecot stop_master "$STATE/run/dovecot/master.pid"
if [[ ${MAILGW_LAB_KEEP:-0} == 1 ]]; then log "kept $STATE"; else rm -rf "$STATE"; log "removed $STATE"; fi
