"""One-time set-up of the repository host, as idempotent steps.

Each step compares what is there with what should be there, changes only
what differs, and returns the lines it prints ("wrote ...", "unchanged ...")
so that a second run says it changed nothing.

The modules: :mod:`.settings` (the ``[host]`` table), :mod:`.gpgkey`,
:mod:`.nginx`, :mod:`.tls`, :mod:`.upload_user`, and :mod:`.release_package`
(the ``mistralrs-release`` RPM users install).  DNS lives in
:mod:`buildlib.cloudflare`, the index page in :mod:`buildlib.site`.
"""
