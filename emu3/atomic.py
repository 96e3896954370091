"""The one way files are written: into a temporary file beside the target, then renamed over it.

Readers never see half a file, an interrupted write (an exception, Ctrl-C) leaves nothing behind, and the file
gets the permissions the user's umask gives any new file (``mkstemp`` alone would leave it 0600).
"""

import contextlib
import json
import os
import tempfile


def umask_mode(directory=False):
    """The permissions the user's umask gives a new file (or folder): for files made by ``mkstemp``/``mkdtemp``,
    which are private (0600/0700) whatever the umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in ``path``'s folder; when the block succeeds it replaces ``path``, otherwise it
    is removed."""
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                               prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path, data):
    """Write ``data`` (str as UTF-8, or bytes) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_write_json(path, obj, **dump_kwargs):
    """``obj`` as JSON (``json.dump`` keyword arguments, e.g. indent) with a final newline, atomically."""
    atomic_write(path, json.dumps(obj, **dump_kwargs) + "\n")
