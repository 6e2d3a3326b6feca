#!/usr/bin/env bash
# Prints the JSON of every event on the stream, one per line, until stopped.
# curl ends when the server ends the stream (exit 0) or refuses it (--fail:
# exit 22 on a 503); the loop starts it again after 1-3 s.
url=${1:-http://localhost:3569/events}
while true; do
  curl -sSN --fail "$url" | while IFS= read -r line; do
    [[ $line == "data: "* ]] && printf '%s\n' "${line#data: }"
  done
  sleep $((1 + RANDOM % 3))
done
