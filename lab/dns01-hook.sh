#!/bin/sh
# certbot DNS-01 hook for the lab: publishes (auth) or removes (cleanup) the challenge's TXT
# record in the lab's DNS (pebble-challtestsrv's management API), where pebble looks it up.
#   group data: flower_tls_challenge = "dns-01", flower_tls_dns_hook = "lab/dns01-hook.sh"
# certbot sets CERTBOT_DOMAIN and CERTBOT_VALIDATION (a base64url token: no quoting needed).
set -eu
api="${FLOWERBED_LAB_DNS_API:-http://10.77.0.1:8055}"
record="_acme-challenge.${CERTBOT_DOMAIN#\*.}."
case "${1:-}" in
auth)
	curl -fsS --noproxy '*' -d "{\"host\":\"$record\",\"value\":\"$CERTBOT_VALIDATION\"}" "$api/set-txt"
	;;
cleanup)
	curl -fsS --noproxy '*' -d "{\"host\":\"$record\"}" "$api/clear-txt"
	;;
*)
	echo "usage: $0 auth|cleanup" >&2
	exit 2
	;;
esac
