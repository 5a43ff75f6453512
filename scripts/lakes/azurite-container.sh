#!/usr/bin/env bash
# Create a blob container in Azurite (default `lake`), signed with Azurite's well-known
# development account key (SharedKey: the only write Azurite lets in without a token).
# Idempotent: an existing container is fine.
set -euo pipefail
container=${1:-lake}
endpoint=${AZURITE_BLOB:-http://127.0.0.1:10000}
account=devstoreaccount1
# Azurite's published development key (docs: "Use the Azurite emulator"), not a secret.
key=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
version=2021-08-06
# The SharedKey string to sign: the verb, eleven empty standard headers, the x-ms-*
# headers, then the resource (account twice: once for the key, once in the path).
to_sign="PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:$date\nx-ms-version:$version\n/$account/$account/$container\nrestype:container"
hexkey=$(printf %s "$key" | base64 -d | od -An -v -tx1 | tr -d ' \n')
signature=$(printf "$to_sign" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)
status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "x-ms-date: $date" -H "x-ms-version: $version" \
  -H "Content-Length: 0" -H "Authorization: SharedKey $account:$signature" \
  "$endpoint/$account/$container?restype=container")
case "$status" in
  201|409) ;;
  *) echo "creating Azurite container '$container' answered HTTP $status" >&2; exit 1 ;;
esac
