#!/usr/bin/env bash
# Start mailgw's loopback mail lab (idempotent: exits 0 at once if it is already up and healthy).
#   Dovecot : IMAP 127.0.0.1:1143, IMAPS 127.0.0.1:1993 (self-signed), LMTP 127.0.0.1:2424
#   Postfix : SMTP 127.0.0.1:2525 (AUTH optional), submission 127.0.0.1:2587 (AUTH required)
# Users (conf/users): alice@ bob@ carol@ gateway@ sink@example.test, password "secret".
# Unknown local users are refused at RCPT (550 5.1.1); any other domain is rewritten to sink@.
# Configs, sockets, queue, Maildirs, logs and pid files all live in the state dir;
# /etc/dovecot and /etc/postfix are never touched. Run as root; packages: install.sh.
#
# Environment: MAILGW_LAB_DIR (default /dev/shm/mailgw-lab: tmpfs, far faster than this disk)
#              MAILGW_LAB_KEEP=1 keeps an existing state dir (Maildirs) instead of wiping it.
# Afterwards: source $MAILGW_LAB_DIR/env.sh for ports, CA file and password.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${MAILGW_LAB_DIR:-/dev/shm/mailgw-lab}
[[ -n ${MAILGW_LAB_DIR:-} || -w /dev/shm ]] || STATE=/tmp/mailgw-lab
USERS=$HERE/conf/users
MAIL_USER=nobody
IMAP_PORT=1143 IMAPS_PORT=1993 LMTP_PORT=2424 SMTP_PORT=2525 SUBMISSION_PORT=2587
PORTS=("$IMAP_PORT" "$IMAPS_PORT" "$LMTP_PORT" "$SMTP_PORT" "$SUBMISSION_PORT")

T0=$EPOCHREALTIME
log() { awk -v a="$T0" -v b="$EPOCHREALTIME" -v m="$*" 'BEGIN { printf "mail-lab start: [%.2fs] %s\n", b - a, m }'; }
STARTED=0
die() {
  echo "mail-lab start: $*" >&2
  if (( STARTED )); then
    for f in dovecot.log dovecot.stderr postfix.log postfix.stderr; do
      [[ -s $STATE/log/$f ]] && { echo "--- $STATE/log/$f" >&2; tail -n 15 "$STATE/log/$f" >&2; }
    done
    MAILGW_LAB_DIR=$STATE MAILGW_LAB_KEEP=1 "$HERE/stop.sh" >&2 || true
    echo "mail-lab start: logs kept in $STATE/log/" >&2
  fi
  exit 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # port what -- bounded: 10 s
  local i
  for (( i = 0; i < 100; i++ )); do port_open "$1" && return 0; sleep 0.1; done
  die "$2 did not open 127.0.0.1:$1 within 10 s"
}
# A zombie counts as dead (some sandboxes' PID 1 reaps orphans late, and kill -0 succeeds on it).
alive() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1; [[ $st != Z* ]]; }
pid_of() { [[ -s $1 ]] && head -n1 "$1" | tr -d ' '; }
DOVECOT_PID=$STATE/run/dovecot/master.pid
POSTFIX_PID=$STATE/postfix/spool/pid/master.pid

# --- already up? (our masters alive and every port answering) -> nothing to do ----------
healthy() {
  local p pid
  for f in "$DOVECOT_PID" "$POSTFIX_PID"; do pid=$(pid_of "$f") && alive "$pid" || return 1; done
  for p in "${PORTS[@]}"; do port_open "$p" || return 1; done
  [[ -s $STATE/env.sh ]]
}
if healthy; then log "already running in $STATE"; exit 0; fi

[[ $(id -u) -eq 0 ]] || die "must run as root (Dovecot switches to $MAIL_USER, Postfix to postfix)"
command -v dovecot >/dev/null && command -v postfix >/dev/null \
  || die "dovecot/postfix not installed: run $HERE/install.sh"
MAIL_UID=$(id -u "$MAIL_USER") && MAIL_GID=$(id -g "$MAIL_USER") || die "no user $MAIL_USER"

# Half-up or crashed earlier run: stop whatever our pid files still name, then require free ports.
[[ -d $STATE ]] && { MAILGW_LAB_DIR=$STATE MAILGW_LAB_KEEP=1 "$HERE/stop.sh" >/dev/null 2>&1 || true; }
for p in "${PORTS[@]}"; do port_open "$p" && die "127.0.0.1:$p is in use by something else"; done

# --- state directory ----------------------------------------------------------------------
[[ ${MAILGW_LAB_KEEP:-0} == 1 ]] || rm -rf "$STATE"
mkdir -p "$STATE"/{etc/postfix,run/dovecot,lib/dovecot,log,ssl,mail,postfix/spool,postfix/lib}
# Postfix wants data_directory owned by mail_owner; Dovecot's mail uid must traverse the tree.
chown postfix:postfix "$STATE/postfix/lib"
chmod 755 "$STATE" "$STATE/run" "$STATE/etc" "$STATE/etc/postfix"
chown "$MAIL_UID:$MAIL_GID" "$STATE/mail" && chmod 700 "$STATE/mail"
runuser -u "$MAIL_USER" -- test -w "$STATE/mail" \
  || die "$MAIL_USER cannot write $STATE/mail: every parent directory must be world-executable"
if [[ ! -s $STATE/ssl/cert.pem ]]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$STATE/ssl/key.pem" -out "$STATE/ssl/cert.pem" 2>/dev/null || die "openssl failed"
  chmod 600 "$STATE/ssl/key.pem"; chmod 644 "$STATE/ssl/cert.pem"
fi

mapfile -t ADDRS < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$USERS" | cut -d: -f1 | tr 'A-Z' 'a-z')
DOMAINS=$(printf '%s\n' "${ADDRS[@]}" | sed 's/.*@//' | sort -u | paste -sd' ')
[[ -n $DOMAINS ]] || die "no user@domain lines in $USERS"
render() { # template output
  sed -e "s#@STATE@#$STATE#g" -e "s#@USERS@#$USERS#g" -e "s#@UID@#$MAIL_UID#g" -e "s#@GID@#$MAIL_GID#g" \
      -e "s#@IMAP_PORT@#$IMAP_PORT#g" -e "s#@IMAPS_PORT@#$IMAPS_PORT#g" -e "s#@LMTP_PORT@#$LMTP_PORT#g" \
      -e "s#@SMTP_PORT@#$SMTP_PORT#g" -e "s#@SUBMISSION_PORT@#$SUBMISSION_PORT#g" \
      -e "s#@DOMAINS@#$DOMAINS#g" "$1" > "$2"
}

# --- Dovecot ---------------------------------------------------------------------------------
render "$HERE/conf/dovecot.conf.in" "$STATE/etc/dovecot.conf"
doveconf -c "$STATE/etc/dovecot.conf" -n >/dev/null 2>"$STATE/log/doveconf.err" \
  || { cat "$STATE/log/doveconf.err" >&2; die "dovecot config invalid"; }
STARTED=1
# Daemons get </dev/null and a log file: inheriting our stdout would hang `$(start.sh)` or pipes.
dovecot -c "$STATE/etc/dovecot.conf" </dev/null >>"$STATE/log/dovecot.stderr" 2>&1 || die "dovecot failed to start"
for p in "$IMAP_PORT" "$IMAPS_PORT" "$LMTP_PORT"; do wait_port "$p" dovecot; done
log "dovecot up (pid $(pid_of "$DOVECOT_PID")): imap $IMAP_PORT, imaps $IMAPS_PORT, lmtp $LMTP_PORT"

# --- Postfix ---------------------------------------------------------------------------------
PF=$STATE/etc/postfix
render "$HERE/conf/postfix/main.cf.in" "$PF/main.cf"
render "$HERE/conf/postfix/master.cf.in" "$PF/master.cf"
printf '%s OK\n' "${ADDRS[@]}" > "$PF/vmailbox"                       # valid local recipients
for a in "${ADDRS[@]}"; do echo "$a $a"; done > "$PF/sender_login"    # submission: sender == login
{ re=$(printf '%s\n' $DOMAINS | sed 's/\./\\./g' | paste -sd'|')
  echo "# generated: every recipient outside the lab domains goes to the sink user"
  echo "if !/@($re)\$/"
  echo "/^(.*)\$/ sink@${DOMAINS%% *}"
  echo "endif"; } > "$PF/virtual_alias.regexp"
chmod 644 "$PF"/*
postfix -c "$PF" start </dev/null >>"$STATE/log/postfix.stderr" 2>&1 || die "postfix failed to start"
wait_port "$SMTP_PORT" postfix; wait_port "$SUBMISSION_PORT" postfix
log "postfix up (pid $(pid_of "$POSTFIX_PID")): smtp $SMTP_PORT, submission $SUBMISSION_PORT"

cat > "$STATE/env.sh" <<ENV
export MAILGW_LAB_DIR=$STATE MAILGW_LAB_HOST=127.0.0.1
export MAILGW_LAB_IMAP_PORT=$IMAP_PORT MAILGW_LAB_IMAPS_PORT=$IMAPS_PORT MAILGW_LAB_LMTP_PORT=$LMTP_PORT
export MAILGW_LAB_SMTP_PORT=$SMTP_PORT MAILGW_LAB_SUBMISSION_PORT=$SUBMISSION_PORT
export MAILGW_LAB_CA=$STATE/ssl/cert.pem MAILGW_LAB_PASSWORD=secret
ENV
log "ready; source $STATE/env.sh; logs in $STATE/log/"
