# %preun: on removal ($1 is 0) the mounts stop and their enablement goes
# with the package; on an upgrade ($1 is 1) running mounts are left alone
# and the new binary runs from their next start.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl --no-reload disable --now secretsfs.service secretsfs@.service >/dev/null 2>&1 || :
    systemctl stop 'secretsfs@*.service' >/dev/null 2>&1 || :
fi
