"""Several worker processes serving one store: ``[server] workers`` above 1.

:mod:`cyrusmail.workers.supervisor` is the twistd process that binds the
ports and starts, watches and stops the workers; :mod:`cyrusmail.workers.worker`
is one worker; :mod:`cyrusmail.workers.channel` is how they talk.
"""
