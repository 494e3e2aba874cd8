# nbdkit Python plugin: one file on an SMB 3 share, read (and written) through Samba's libsmbclient.
#
# The userspace CIFS path (src/service/sources/legacy-cifs.ts) for kernels without CIFS. libsmbclient is
# Samba's own client library, packaged by Debian beside the server; it speaks SMB 3.1.1 with encryption,
# which curl's SMB support (SMB1 only) and the npm SMB clients (SMB2 without encryption) do not.
#
#   nbdkit python smb-plugin.py url=smb://host[:port]/share/path user=NAME password=-FD readonly=true|false
#
# The password is read from the fd named (never argv). The connection is made before nbdkit listens, so
# a wrong password or a missing file stops nbdkit with one stderr line the service maps to an errno:
#   vmedia-smb: EACCES: <reason>
import ctypes
import errno
import os
import sys

import nbdkit

API_VERSION = 2

# SMBC_ENCRYPTLEVEL_REQUIRE: every tree connection asks the server for SMB3 encryption.
ENCRYPT_REQUIRE = 2
# libsmbclient 4.17 does not fail the open when the server cannot encrypt: it prints this on stdout and
# goes on unencrypted. The plugin reads its own stdout while it connects and refuses the share then.
NO_ENCRYPTION_NOTICE = b"server doesn't support SMB3 encryption"

AUTH_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                           ctypes.c_void_p, ctypes.c_int)
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)

smbc = ctypes.CDLL("libsmbclient.so.0", use_errno=True)
smbc.smbc_new_context.restype = ctypes.c_void_p
smbc.smbc_init_context.restype = ctypes.c_void_p
smbc.smbc_init_context.argtypes = [ctypes.c_void_p]
for name in ("smbc_setOptionSmbEncryptionLevel", "smbc_setOptionNoAutoAnonymousLogin", "smbc_setDebug"):
    getattr(smbc, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
smbc.smbc_setOptionProtocols.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
smbc.smbc_setConfiguration.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
smbc.smbc_setFunctionAuthDataWithContext.argtypes = [ctypes.c_void_p, AUTH_FN]
smbc.smbc_setLogCallback.argtypes = [ctypes.c_void_p, ctypes.c_void_p, LOG_FN]
smbc.smbc_set_context.argtypes = [ctypes.c_void_p]
smbc.smbc_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
smbc.smbc_lseek.restype = ctypes.c_int64
smbc.smbc_lseek.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int]
smbc.smbc_read.restype = ctypes.c_ssize_t
smbc.smbc_read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
smbc.smbc_write.restype = ctypes.c_ssize_t
smbc.smbc_write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
libc = ctypes.CDLL(None)

settings = {"url": None, "user": b"", "password": b"", "readonly": True}
medium = {"fd": -1, "size": 0}
# libsmbclient's debug lines, kept for the reason of a failure instead of being printed.
debug_lines = []


def thread_model():
    # One libsmbclient context and one file position: requests one at a time.
    return nbdkit.THREAD_MODEL_SERIALIZE_ALL_REQUESTS


def config(key, value):
    if key == "url":
        settings["url"] = value.encode()
    elif key == "user":
        settings["user"] = value.encode()
    elif key == "password":
        if not (value.startswith("-") and value[1:].isdigit()):
            raise RuntimeError("password must be given as -FD, the fd to read it from")
        settings["password"] = read_all(int(value[1:]))
    elif key == "readonly":
        settings["readonly"] = value != "false"
    else:
        raise RuntimeError("unknown parameter " + key)


def config_complete():
    if not settings["url"]:
        raise RuntimeError("url=smb://host/share/path is required")


def read_all(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def fail(code, reason):
    """Stops nbdkit with the one line the service reads."""
    sys.stderr.write("vmedia-smb: %s: %s\n" % (errno.errorcode.get(code, "EIO"), reason))
    sys.stderr.flush()
    raise RuntimeError(reason)


@AUTH_FN
def authenticate(_ctx, _server, _share, _workgroup, _workgroup_len, user, user_len, password, password_len):
    for value, buffer, size in ((settings["user"], user, user_len), (settings["password"], password, password_len)):
        data = value[: size - 1] + b"\0"
        ctypes.memmove(buffer, data, len(data))


@LOG_FN
def keep_debug_line(_private, _level, message):
    debug_lines.append(message.decode(errors="replace").strip())


def with_stdout_captured(action):
    """Runs action with fd 1 on a pipe; returns its result and what libsmbclient printed."""
    reader, writer = os.pipe()
    saved = os.dup(1)
    libc.fflush(None)
    os.dup2(writer, 1)
    os.close(writer)
    try:
        result = action()
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
    os.set_blocking(reader, False)
    printed = b""
    try:
        while True:
            chunk = os.read(reader, 65536)
            if not chunk:
                break
            printed += chunk
    except BlockingIOError:
        pass
    os.close(reader)
    return result, printed


def get_ready():
    context = smbc.smbc_new_context()
    smbc.smbc_setDebug(context, 0)
    smbc.smbc_setLogCallback(context, None, keep_debug_line)
    # No smb.conf of this machine's (a server's settings) applies to the client.
    smbc.smbc_setConfiguration(context, b"/dev/null")
    smbc.smbc_setOptionNoAutoAnonymousLogin(context, 1)
    smbc.smbc_setOptionSmbEncryptionLevel(context, ENCRYPT_REQUIRE)
    smbc.smbc_setOptionProtocols(context, b"SMB3_00", b"SMB3_11")
    smbc.smbc_setFunctionAuthDataWithContext(context, authenticate)
    if not smbc.smbc_init_context(context):
        fail(ctypes.get_errno() or errno.EIO, "libsmbclient could not start")
    smbc.smbc_set_context(context)

    flags = os.O_RDONLY if settings["readonly"] else os.O_RDWR
    fd, printed = with_stdout_captured(lambda: smbc.smbc_open(settings["url"], flags, 0))
    code = ctypes.get_errno()
    settings["password"] = b""
    if NO_ENCRYPTION_NOTICE in printed:
        fail(errno.EPROTONOSUPPORT, "the SMB server does not offer SMB3 encryption")
    if fd < 0:
        detail = "; ".join(line for line in debug_lines[-2:] if "NT_STATUS" in line)
        fail(code or errno.EIO, os.strerror(code or errno.EIO) + (" (%s)" % detail if detail else ""))
    size = smbc.smbc_lseek(fd, 0, os.SEEK_END)
    if size < 0:
        fail(ctypes.get_errno() or errno.EIO, "the file's size could not be read")
    medium["fd"], medium["size"] = fd, size


def open(_readonly):
    return medium


def get_size(_handle):
    return medium["size"]


def can_write(_handle):
    return not settings["readonly"]


def transfer(function, buffer, offset):
    if smbc.smbc_lseek(medium["fd"], offset, os.SEEK_SET) < 0:
        nbdkit.set_error(ctypes.get_errno() or errno.EIO)
        raise RuntimeError("seek failed")
    view = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    done = 0
    while done < len(buffer):
        count = function(medium["fd"], ctypes.byref(view, done), len(buffer) - done)
        if count <= 0:
            nbdkit.set_error(ctypes.get_errno() or errno.EIO)
            raise RuntimeError("SMB transfer failed")
        done += count


def pread(_handle, buffer, offset, _flags):
    transfer(smbc.smbc_read, buffer, offset)


def pwrite(_handle, buffer, offset, _flags):
    transfer(smbc.smbc_write, bytearray(buffer), offset)
