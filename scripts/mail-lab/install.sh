#!/usr/bin/env bash
# Install the Debian packages the mailgw mail lab needs (Dovecot IMAP+LMTP, Postfix).
# Idempotent and non-interactive; never creates /etc/postfix/main.cf and never lets the package
# scripts start the *system* Dovecot/Postfix (they would listen on 0.0.0.0:25/143/993).
# Run as root. Budget ~30-40 s on a fresh machine; <0.1 s when everything is installed.
set -euo pipefail
PKGS=(dovecot-imapd dovecot-lmtpd postfix)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if (( ${#missing[@]} == 0 )); then echo "mail-lab install: already installed"; exit 0; fi
[[ $(id -u) -eq 0 ]] || { echo "mail-lab install: must run as root" >&2; exit 1; }

# "No configuration": Postfix gets no main.cf, so its init script never starts a system instance.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# policy-rc.d exiting 101 tells invoke-rc.d not to start services. Add one only for the
# duration of the install, and only if the image does not already ship one.
own_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  own_policy=1
fi
trap 'if (( own_policy )); then rm -f /usr/sbin/policy-rc.d; fi' EXIT

export DEBIAN_FRONTEND=noninteractive
t0=$EPOCHREALTIME
# Empty package lists (fresh image): update once. A failed install may mean stale lists: retry once.
if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -print -quit) ]]; then
  apt-get update -q
fi
apt-get install -y -q --no-install-recommends "${missing[@]}" \
  || { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
awk -v a="$t0" -v b="$EPOCHREALTIME" -v p="${missing[*]}" \
  'BEGIN { printf "mail-lab install: installed %s in %.1fs\n", p, b - a }'
