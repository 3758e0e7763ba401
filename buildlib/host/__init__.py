"""One-time set-up of the repository host, as idempotent steps.

Each step compares what is there with what should be there, changes only
what differs, and returns the lines it prints ("wrote ...", "unchanged ...")
so that a second run says it changed nothing.

The ``[host]`` table is read with the rest in :mod:`buildlib.config`
(:class:`~buildlib.config.Host`).  The modules: :mod:`.gpgkey`,
:mod:`.nginx`, :mod:`.tls`, :mod:`.upload_user`, and :mod:`.release_package`
(the ``mistralrs-release`` RPM users install).  DNS is :mod:`.dns` over
:mod:`.cloudflare`; the index page is :mod:`buildlib.publish.site`.
"""
