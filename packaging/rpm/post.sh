# %post, after an install and after an upgrade: systemd reads the units
# again. Nothing is enabled, started or restarted: the mount needs settings
# first, and a restart would restart every service that Requires= it
# (docs/packages.md, "Scriptlets").
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
