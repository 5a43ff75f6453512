#!/usr/bin/env bash
# Create the MySQL/MariaDB account the mirror syncs as, on a server as its distribution
# ships it (Debian's MariaDB lets root in only through the unix socket, with no password).
# Once, idempotently: connects as root through the socket (with sudo when not root),
# creates the sync account with a generated password kept in a file only its owner can
# read, and grants it only what the mirror needs (docs/operations.md#the-mysql-accounts):
#   - on the mirror database: SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX,
#     CREATE VIEW, SHOW VIEW (its tables, its sync state, the BI views), CREATE ROUTINE,
#     ALTER ROUTINE, EXECUTE (the views' lakestream_local_time function), WITH GRANT
#     OPTION (to let the read-only BI account SELECT the views);
#   - CREATE USER (to create the BI account and reset its privileges).
# A re-run reuses the password file and the account. The read-only BI account itself is
# created by the sync (mysql.bi_user) when its password variable is set.
#
# Settings (environment): LAKESTREAM_MYSQL_SOCKET (default: the server's own),
# LAKESTREAM_MYSQL_DATABASE (lakestream), LAKESTREAM_MYSQL_USER (lakestream_sync),
# LAKESTREAM_MYSQL_PASSWORD_FILE (~/.config/lakestream/mysql-sync.password).
set -euo pipefail

log() { printf '[mysql-accounts] %s\n' "$*" >&2; }

DB=${LAKESTREAM_MYSQL_DATABASE:-lakestream}
SYNC_USER=${LAKESTREAM_MYSQL_USER:-lakestream_sync}
PASSWORD_FILE=${LAKESTREAM_MYSQL_PASSWORD_FILE:-$HOME/.config/lakestream/mysql-sync.password}
for name in "$DB" "$SYNC_USER"; do
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]{0,63}$ ]] || { log "'$name' cannot be a MySQL name"; exit 2; }
done

client=$(command -v mariadb || command -v mysql || true)
[ -n "$client" ] || { log "no mariadb/mysql client found: install mariadb-client"; exit 1; }
socket_args=(--protocol=socket)
[ -n "${LAKESTREAM_MYSQL_SOCKET:-}" ] && socket_args+=("--socket=$LAKESTREAM_MYSQL_SOCKET")
admin() {
  if [ "$(id -u)" -eq 0 ]; then
    "$client" "${socket_args[@]}" -u root "$@"
  else
    sudo -n "$client" "${socket_args[@]}" -u root "$@"
  fi
}
if ! admin -e 'SELECT 1' >/dev/null 2>"${TMPDIR:-/tmp}/mysql-accounts.err"; then
  log "cannot connect as root through the unix socket: $(tail -n 1 "${TMPDIR:-/tmp}/mysql-accounts.err")"
  log "run this script as root (or with sudo rights), or create the account by hand as docs/operations.md#the-mysql-accounts shows"
  exit 1
fi

if [ -s "$PASSWORD_FILE" ]; then
  password=$(head -n 1 "$PASSWORD_FILE")
  log "reusing the password in $PASSWORD_FILE"
else
  mkdir -p "$(dirname "$PASSWORD_FILE")"
  # Hex: no quoting needed anywhere it goes.
  password=$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s\n' "$password" > "$PASSWORD_FILE")
  log "generated the sync account's password into $PASSWORD_FILE (mode 600)"
fi
chmod 600 "$PASSWORD_FILE"

# The mirror connects over TCP to 127.0.0.1 (or ::1), which the server may see as
# 'localhost', '127.0.0.1' or '::1'.
sql="CREATE DATABASE IF NOT EXISTS \`$DB\` CHARACTER SET utf8mb4;"
for host in localhost 127.0.0.1 ::1; do
  account="'$SYNC_USER'@'$host'"
  sql+="CREATE USER IF NOT EXISTS $account IDENTIFIED BY '$password';"
  sql+="ALTER USER $account IDENTIFIED BY '$password';"
  sql+="GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EXECUTE ON \`$DB\`.* TO $account WITH GRANT OPTION;"
  sql+="GRANT CREATE USER ON *.* TO $account;"
done
# On stdin, not the command line: other users could read the password from ps.
admin <<< "$sql"
log "account '$SYNC_USER' can write database '$DB' (and manage the read-only BI account); password in $PASSWORD_FILE"
