"""Optional CURVE encryption and authentication for the bus and the RPC.

Off by default (everything binds to 127.0.0.1). When the bus or RPC listens beyond localhost,
give the servers a key pair and a folder of the client public keys they accept; give every
client its own key pair and the server's public key. Keys are ZeroMQ certificate files, made by
``python -m engine.security keygen DIR NAME`` (``NAME.key`` public, ``NAME.key_secret`` secret).

Server side (engine, ``--bus-only``): ``CURVE_SERVER_SECRET`` (its ``.key_secret`` file) and
``CURVE_CLIENTS_DIR`` (the accepted clients' ``.key`` files). Client side (bots, workers, the
bridge): ``CURVE_CLIENT_SECRET`` (its own ``.key_secret`` file) and ``CURVE_SERVER_KEY`` (the
server's ``.key`` file). A client without an accepted key is refused by the ZAP handler and
never receives a message.

What a key may publish on ``mt5-engine --bus-only`` is written in its public certificate
(``keygen ... --publish PREFIXES``, a ``publish`` line in the ``.key`` file's metadata) and read
when the bus starts: ``*`` for the engine's key (every topic), a list of prefixes such as
``ind:,health:indicators:`` for a worker's, ``""`` for a key that only subscribes. A key without
the line may publish what any non-engine publisher may (``engine.publish_policy``).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from engine.publish_policy import ForeignPolicy, Grant, parse_prefixes

PUBLISH_METADATA = "publish"


class SecurityError(ValueError):
    """A key file that is missing or unreadable; the message names the setting."""


def _load(path: str, setting: str, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise SecurityError(f"{setting}: cannot read key file {path!r}: {exc}") from None
    if secret and secret_key is None:
        raise SecurityError(f"{setting}: {path!r} holds no secret key (use the .key_secret file)")
    return public, secret_key


@dataclass(frozen=True)
class CurveServer:
    public: bytes
    secret: bytes
    clients_dir: str

    @classmethod
    def load(cls, secret_file: str, clients_dir: str) -> CurveServer | None:
        """From the two settings; None when both are empty (CURVE off)."""
        if not secret_file and not clients_dir:
            return None
        if not (secret_file and clients_dir):
            raise SecurityError("CURVE_SERVER_SECRET and CURVE_CLIENTS_DIR must be set together")
        if not Path(clients_dir).is_dir():
            raise SecurityError(f"CURVE_CLIENTS_DIR: {clients_dir!r} is not a folder")
        public, secret = _load(secret_file, "CURVE_SERVER_SECRET", secret=True)
        return cls(public, secret, clients_dir)

    def start_authenticator(self, ctx: zmq.Context) -> ThreadAuthenticator:
        """The ZAP handler accepting exactly the public keys in ``clients_dir``."""
        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve(domain="*", location=self.clients_dir)
        return auth

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before bind) a CURVE server."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


@dataclass(frozen=True)
class CurveClient:
    public: bytes
    secret: bytes
    server_key: bytes

    @classmethod
    def load(cls, secret_file: str, server_file: str) -> CurveClient | None:
        """From the two settings; None when both are empty (CURVE off)."""
        if not secret_file and not server_file:
            return None
        if not (secret_file and server_file):
            raise SecurityError("CURVE_CLIENT_SECRET and CURVE_SERVER_KEY must be set together")
        public, secret = _load(secret_file, "CURVE_CLIENT_SECRET", secret=True)
        server_key, _ = _load(server_file, "CURVE_SERVER_KEY", secret=False)
        return cls(public, secret, server_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CurveClient | None:
        return cls.load(env.get("CURVE_CLIENT_SECRET", ""), env.get("CURVE_SERVER_KEY", ""))

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before connect) a CURVE client of the server."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_key


def apply_client(sock: zmq.Socket, curve: CurveClient | None) -> zmq.Socket:
    """``sock`` as a CURVE client when ``curve`` is set; returned for chaining."""
    if curve is not None:
        curve.apply(sock)
    return sock


def read_publish_metadata(path: str | Path) -> str | None:
    """The ``publish`` value in a certificate's metadata section; None when it has none."""
    section = ""
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not raw[0].isspace():
            section = line
        elif section == "metadata":
            name, sep, value = line.partition("=")
            if sep and name.strip() == PUBLISH_METADATA:
                return value.strip().strip("\"'")
    return None


def load_publish_grants(clients_dir: str) -> dict[str, Grant]:
    """What each accepted key may publish, by its z85 public key (the ZAP User-Id)."""
    grants: dict[str, Grant] = {}
    for path in sorted(Path(clients_dir).glob("*.key")):
        public, _ = _load(str(path), "CURVE_CLIENTS_DIR", secret=False)
        try:
            text = read_publish_metadata(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise SecurityError(f"CURVE_CLIENTS_DIR: cannot read {str(path)!r}: {exc}") from None
        grants[public.decode()] = ForeignPolicy() if text is None else parse_prefixes(text)
    return grants


def _write_publish_metadata(public_file: str, prefixes: str) -> None:
    """Put ``publish = "prefixes"`` in the public certificate's metadata section (pyzmq writes
    metadata only into the secret one, which the bus never sees)."""
    path = Path(public_file)
    text = path.read_text(encoding="utf-8")
    line = f'{PUBLISH_METADATA} = "{prefixes}"'
    path.write_text(text.replace("metadata\n", f"metadata\n    {line}\n", 1), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.security",
                                     description="Make a CURVE key pair (NAME.key public, NAME.key_secret secret).")
    parser.add_argument("command", choices=["keygen"])
    parser.add_argument("dir", help="folder for the two files")
    parser.add_argument("name", help="the key's name")
    parser.add_argument("--publish", default=None, metavar="PREFIXES",
                        help="what the key may publish on mt5-engine --bus-only: '*' (every topic: the "
                             "engine's key), comma-separated topic prefixes (e.g. 'ind:,health:indicators:'), "
                             "or '' (nothing); without it, what any non-engine publisher may")
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.publish is not None and any(c in args.publish for c in "\"\n\r"):
        print("--publish: prefixes may not contain quotes or line breaks", file=sys.stderr)
        return 2
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(folder), args.name)
    Path(secret).chmod(0o600)
    if args.publish is not None:
        _write_publish_metadata(public, args.publish)
    print(f"public key: {public}\nsecret key: {secret} (keep it private)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
