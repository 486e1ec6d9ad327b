#!/bin/sh
# Start Alertmanager with the webhook receiver's URL written into its configuration (compose and `co2 up`).
#
# Alertmanager expands no environment variables in its configuration, and a webhook's `url_file` exists
# only from 0.26 (Debian's Alertmanager, which `co2 up` and the tests run, is 0.25): this writes a copy of
# the configuration with ALERTMANAGER_WEBHOOK_URL in place of the placeholder, then runs the command it
# is given (Alertmanager on that copy). The copy is private (0600): a chat webhook's URL carries its token.
#
#   ALERTMANAGER_WEBHOOK_URL  http(s) URL the alerts are POSTed to; empty: the route goes to `co2-none`
#   ALERTMANAGER_TEMPLATE     the configuration with the placeholder (default /etc/alertmanager/alertmanager.yml)
#   ALERTMANAGER_CONFIG       where the copy goes (default /alertmanager/alertmanager.yml)
set -eu

placeholder='http://co2-alert-webhook.invalid/'
template="${ALERTMANAGER_TEMPLATE:-/etc/alertmanager/alertmanager.yml}"
config="${ALERTMANAGER_CONFIG:-/alertmanager/alertmanager.yml}"
url="${ALERTMANAGER_WEBHOOK_URL:-}"
export ALERTMANAGER_WEBHOOK_URL="$url"

case "$url" in
  "") echo "alertmanager: ALERTMANAGER_WEBHOOK_URL is empty: alerts are shown on Alertmanager's page, sent nowhere" >&2 ;;
  *[[:space:]\"\\]*)
    echo "alertmanager: ALERTMANAGER_WEBHOOK_URL holds a space, a quote or a backslash; percent-encode them" >&2
    exit 2 ;;
  http://?*|https://?*) ;;
  *) echo "alertmanager: ALERTMANAGER_WEBHOOK_URL must start with http:// or https://" >&2; exit 2 ;;
esac

umask 077
mkdir -p "$(dirname "$config")"
awk -v placeholder="$placeholder" '
  BEGIN { url = ENVIRON["ALERTMANAGER_WEBHOOK_URL"] }
  url != "" && (at = index($0, placeholder)) > 0 {
    $0 = substr($0, 1, at - 1) url substr($0, at + length(placeholder)); changed++
  }
  url == "" && $0 ~ /^  receiver: co2-webhook$/ { sub(/co2-webhook/, "co2-none"); changed++ }
  { print }
  END {
    if (changed != 1) {
      print "alertmanager: " FILENAME " has not exactly one webhook placeholder and route receiver co2-webhook" > "/dev/stderr"
      exit 3
    }
  }
' "$template" > "$config.new"
mv "$config.new" "$config"
exec "$@"
