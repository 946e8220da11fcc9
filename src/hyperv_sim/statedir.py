"""The state directory, as the boot loader and the hypervisor open it.

A host's directory is dom0's side of the machine: RAM file, privcmd socket,
console log, pid file.  It must belong to whoever runs the host and be
writable by nobody else, and nothing in it is opened through a symlink:
another local user who pre-creates the directory or plants a link gets a
one-line refusal, never a write into a file of theirs (or of root's).
One boot or recover at a time holds its lock.
"""
import errno
import os
import stat

from .errors import HypervSimError

LOCK_FILE = "lock"


class StateDirError(HypervSimError):
    """The directory, or a file in it, is not one this user may trust."""


def check(path, create=True):
    """Create the directory (0700) or check the one given: owned by this
    user, not writable by group or others, not a symlink."""
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StateDirError("cannot create state directory %s: %s" % (path, e.strerror))
    try:
        st = os.lstat(path)
    except OSError as e:
        raise StateDirError("state directory %s: %s" % (path, e.strerror))
    if stat.S_ISLNK(st.st_mode):
        raise StateDirError("state directory %s is a symlink; refusing" % path)
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError("state directory %s is not a directory" % path)
    if st.st_uid != os.geteuid():
        raise StateDirError("state directory %s belongs to uid %d, not to you" % (path, st.st_uid))
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError("state directory %s is writable by others; refusing" % path)


def check_files(path, names):
    """Each of `names` in the directory, if there, is a regular file and
    not a symlink: checked before anything is created."""
    for name in names:
        full = os.path.join(path, name)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            raise StateDirError("%s is a symlink; refusing to use it" % full)
        if not stat.S_ISREG(st.st_mode) and not stat.S_ISSOCK(st.st_mode):
            raise StateDirError("%s is not a regular file; refusing to use it" % full)


def open_file(path, flags, mode=0o600):
    """os.open that never follows a symlink and takes only regular files."""
    try:
        # O_NONBLOCK: a FIFO planted here must not hang the open.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StateDirError("%s is a symlink; refusing to open it" % path) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise StateDirError("%s is not a regular file; refusing" % path)
    os.set_blocking(fd, True)
    return fd


def open_text(path, mode):
    """A text file in the state directory: "w" (truncate), "a" or "r"."""
    flags = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
             "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "r": os.O_RDONLY}[mode]
    return os.fdopen(open_file(path, flags), mode, buffering=1 if mode != "r" else -1)


class locked:
    """`with locked(path):` hold the directory's lock, one boot or recover
    at a time.  (A class, not contextlib: this module is imported inside
    every live update's blackout, and only the boot loader locks.)"""

    def __init__(self, path):
        self.path = path

    def __enter__(self):
        import fcntl
        self.fd = open_file(os.path.join(self.path, LOCK_FILE), os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise StateDirError("another boot or recover is under way in %s" % self.path) from None
        return self

    def __exit__(self, *_):
        os.close(self.fd)
