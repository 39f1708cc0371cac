"""CURVE key loading for client and worker sockets (czmq zcert files)."""
from __future__ import annotations

import os
from typing import NamedTuple, Optional, Union

import zmq
import zmq.auth

PathLike = Union[str, "os.PathLike[str]"]


class CurveKeys(NamedTuple):
    public: bytes
    secret: bytes
    server_public: bytes


def load_curve_keys(curve_key: Optional[PathLike], curve_server_key: Optional[PathLike]) -> Optional[CurveKeys]:
    """Load ``NAME.key_secret`` (ours: public and secret key) and ``broker.key``
    (the broker's public key), both in czmq zcert format, with
    ``zmq.auth.load_certificate``. Returns None when neither is given.

    Raises ValueError when only one is given or ``curve_key`` has no secret key,
    OSError when a file does not exist, RuntimeError when libzmq lacks CURVE.
    """
    if curve_key is None and curve_server_key is None:
        return None
    if curve_key is None or curve_server_key is None:
        raise ValueError("CURVE needs both curve_key (our NAME.key_secret) and curve_server_key (the broker's broker.key)")
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    public, secret = zmq.auth.load_certificate(os.fspath(curve_key))
    if not secret:
        raise ValueError(f"{os.fspath(curve_key)} holds no secret key: pass the NAME.key_secret file, not NAME.key")
    server_public, _ = zmq.auth.load_certificate(os.fspath(curve_server_key))
    for name, key in (("public", public), ("secret", secret), ("server", server_public)):
        if len(key) != 40:
            raise ValueError(f"the CURVE {name} key must be 40 Z85 characters, got {len(key)}")
    return CurveKeys(public, secret, server_public)


def apply_curve(sock: zmq.Socket, keys: Optional[CurveKeys]) -> None:
    """Set curve_secretkey/curve_publickey/curve_serverkey before connect()."""
    if keys is None:
        return
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server_public
