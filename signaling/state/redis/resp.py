"""Redis commands as RESP bytes built ahead of time.

A keystroke's typing change sends the same three commands every time, differing only in
the state's deadline and the timer's due time. hiredis encodes a command from its
arguments on every call (a tuple per command, each argument measured and copied); on the
node that was about a fifth of a typing change's Python. Here the constant part of each
command is encoded once per room and user, and only what changes is appended per call.
"""

from __future__ import annotations


def bulk(value: str | bytes | int) -> bytes:
    """One argument as a RESP bulk string (text as UTF-8, as hiredis sends it)."""
    if isinstance(value, str):
        value = value.encode()
    elif isinstance(value, int):
        value = b"%d" % value
    return b"$%d\r\n%b\r\n" % (len(value), value)


def head(count: int, *args: str | bytes | int) -> bytes:
    """The start of a command of ``count`` arguments: the array's header and the first
    ``args``; the caller appends the rest, each as :func:`bulk`."""
    return b"*%d\r\n" % count + b"".join(bulk(arg) for arg in args)


def command(*args: str | bytes | int) -> bytes:
    """A whole command."""
    return head(len(args), *args)
