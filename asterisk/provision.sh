#!/bin/sh
# Installs Asterisk and its sounds into a Debian sid system.
# Runs *inside* the target: the chroot built by sandbox.sh, or `RUN` in docker/Dockerfile.asterisk.
# Any change to this file makes sandbox.sh rebuild the cached root.
set -eu
export DEBIAN_FRONTEND=noninteractive

# Package scripts must not start services inside the root.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d

# sid's Release file is often expired on mirrors.
echo 'Acquire::Check-Valid-Until "false";' > /etc/apt/apt.conf.d/99no-check-valid-until

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    asterisk asterisk-modules \
    asterisk-core-sounds-en-gsm asterisk-core-sounds-fr asterisk-core-sounds-fr-gsm \
    ca-certificates >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*

mkdir -p /var/spool/asterisk/recording /var/lib/asterisk/sounds/phonemfa /var/run/asterisk
chown -R asterisk:asterisk /var/spool/asterisk /var/lib/asterisk /var/run/asterisk /var/log/asterisk
