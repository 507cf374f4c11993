# %postun, after a removal and after an upgrade: systemd forgets the units
# or reads the new ones. Nothing is restarted.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
