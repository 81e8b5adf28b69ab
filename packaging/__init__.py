"""Service files for installing the agent: systemd (Linux), launchd (macOS), XDG autostart.

They are templates: ``cratesense service install`` fills in the Python interpreter of the
current installation (``@PYTHON@``) and the log folder (``@LOGDIR@``)."""
