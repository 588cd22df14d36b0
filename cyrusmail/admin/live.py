"""``cyrusmail-admin who|kick|trace``: the running server's sessions, through its control socket.

These ask the server (:mod:`cyrusmail.control`); when none runs on the
config's data folder they say so on one line and exit 1.

* ``who``: a table of the live sessions (session number, service, user,
  address, since, and the process serving it);
* ``kick USER``: ends USER's sessions with the protocol's goodbye
  (``* BYE``, ``-ERR [SYS/TEMP]``, ``421 4.3.2``: "Disconnected by the
  administrator"); the user may log in again at once;
* ``trace USER on|off`` (``trace`` alone lists who is traced): the
  protocol trace of USER's next sessions (:mod:`cyrusmail.trace`).
"""

from __future__ import annotations

KICK_REASON = "Disconnected by the administrator"


def ask(admin, command: str) -> list[str]:
    """The server's answer (without its final ``ok`` line); AdminError if no server answers."""
    from cyrusmail import control
    from cyrusmail.admin.main import AdminError

    try:
        answer = control.ask(admin.config.data, command)
    except control.ControlError as error:
        raise AdminError(f"the server refused {command.split()[0]!r}: {error}") from None
    if answer is None:
        raise AdminError(f"no server is running on {admin.config.data.absolute()}")
    return answer


def who(admin, args) -> None:
    rows = [line[2:].split() for line in ask(admin, "who")[:-1] if line.startswith("* ")]
    table = [["SESSION", "SERVICE", "USER", "ADDRESS", "SINCE", "PROCESS"]]
    for row in rows:
        number, service, peer, user, since, *rest = row
        table.append([number, service, user, peer, since.replace("T", " ").rstrip("Z") + " UTC", *rest[:1]])
    widths = [max(len(line[column]) if column < len(line) else 0 for line in table) for column in range(6)]
    for line in table:
        admin.say("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip())
    admin.say(f"{len(rows)} sessions")


def kick(admin, args) -> None:
    from cyrusmail.admin.main import end_everywhere
    from cyrusmail.store.names import user_name

    user = user_name(args.user)
    try:
        ended = ask(admin, f"kick {user} {KICK_REASON}")[-1].split()[-1]
    finally:
        end_everywhere(admin, user, KICK_REASON)  # the other servers on a PostgreSQL store
    admin.say(f"{ended} sessions of {user} ended")


def trace(admin, args) -> None:
    from cyrusmail.admin.main import AdminError
    from cyrusmail.store.names import user_name

    if args.user is None:
        users = sorted({line[2:] for line in ask(admin, "trace")[:-1]})  # each worker names them
        admin.say("\n".join(users) if users else "no one is traced")
        return
    if args.state is None:
        raise AdminError("usage: trace USER on|off")
    user = user_name(args.user)
    ask(admin, f"trace {user} {args.state}")
    folder = admin.config.data / "rawlog" / user
    admin.say(f"{user}: traced from the next login, in {folder}" if args.state == "on"
              else f"{user}: not traced (until the next start, if [server] rawlog_users names them)")


def add_commands(commands, command) -> None:
    command(commands, "who", who, "list the running server's live sessions")
    command(commands, "kick", kick, "end USER's live sessions (the user may log in again)").add_argument("user")
    sub = command(commands, "trace", trace, "trace USER's next sessions to DATA/rawlog/USER (on|off), or list")
    sub.add_argument("user", nargs="?")
    sub.add_argument("state", nargs="?", choices=["on", "off"])
