#!/bin/sh
# Appends one timestamped line to respot's deployment log on the instance.
# Shipped by respot to every instance; run by cloud-init, never over SSH.
umask 022
mkdir -p /var/log/respot
printf '%s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >> /var/log/respot/deploy.log
