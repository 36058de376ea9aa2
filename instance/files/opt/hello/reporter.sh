#!/bin/sh
# Depends on hello-health: logs its answer to the journal every 30 seconds.
while true; do
    if answer=$(python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=5).read().decode())' 2>&1); then
        echo "health: $answer"
    else
        echo "health unreachable: $answer" >&2
    fi
    sleep 30
done
