"""A loopback TCP proxy that lets a Redshift driver talk to the local PostgreSQL.

``redshift_connector`` (the driver of dbt-redshift 1.11) speaks PostgreSQL's wire
protocol version 3, but its handshake differs in three ways that PostgreSQL (or the
driver) cannot get past; the proxy changes exactly those and then copies bytes both
ways untouched. It never reads or rewrites SQL.

* Its startup message carries parameters only Redshift knows; PostgreSQL ends such a
  connection with ``FATAL: unrecognized configuration parameter "client_protocol_version"``.
  The proxy drops :data:`REDSHIFT_ONLY_PARAMETERS` (what it dropped is kept in
  :attr:`RedshiftProxy.stripped`, for the tests to show).
* The driver parses the server's ``server_version`` as a plain version number;
  Debian's PostgreSQL reports ``15.20 (Debian 15.20-0+deb12u1)``, on which the driver
  raises ``InvalidVersion``. The proxy trims it to ``15.20`` in that one handshake message.
* TLS: the driver verifies the server's certificate (``sslmode`` below ``verify-full``
  means ``verify-ca`` to it) and IAM auth refuses to run without TLS. With ``tls`` set,
  the proxy answers ``SSLRequest`` with ``S`` and serves TLS itself (the tests make a
  throw-away CA and give it to the driver through ``SSL_CERT_FILE``); without it, it
  answers ``N`` and the driver stops with "Server refuses SSL", so a profile then needs
  ``sslmode: disable``.

With ``password`` set, the proxy asks the client for a cleartext password itself and
refuses a wrong one with PostgreSQL's own error, so password auth is really checked
although the local PostgreSQL trusts every login. A ``CancelRequest`` is passed on as it came.
"""

from __future__ import annotations

import datetime
import re
import select
import socket
import ssl
import struct
import threading
from pathlib import Path
from typing import Any, Iterable

#: Startup parameters redshift_connector sends that PostgreSQL refuses (found by trying:
#: PostgreSQL takes any other name as a setting and fails on the first it does not know).
REDSHIFT_ONLY_PARAMETERS = frozenset(
    {
        "client_protocol_version",
        "driver_version",
        "os_version",
        "driver_discovery_version",
        # Sent only with identity-provider plugins (never on the paths tested here).
        "plugin_name",
        "idp_type",
        "provider_name",
        "identity_namespace",
        "token_type",
    }
)

PROTOCOL_V3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
AUTH_CLEARTEXT = 3


class RedshiftProxy:
    """A thread-based proxy on a free loopback port in front of one PostgreSQL server."""

    def __init__(
        self,
        upstream: tuple[str, int] = ("127.0.0.1", 5432),
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        strip: Iterable[str] = REDSHIFT_ONLY_PARAMETERS,
    ) -> None:
        self.upstream = upstream
        self.password = password
        self.tls = tls
        self.strip = frozenset(strip)
        #: Every startup parameter name the proxy dropped, over all connections.
        self.stripped: set[str] = set()
        #: How many client connections reached PostgreSQL through the proxy.
        self.sessions = 0
        #: How many of them came over TLS.
        self.tls_sessions = 0
        #: How many times a client asked for TLS (and was told no, without ``tls``).
        self.ssl_requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def port(self) -> int:
        """The loopback port clients connect to."""
        return int(self._listener.getsockname()[1])

    def __enter__(self) -> RedshiftProxy:
        threading.Thread(target=self._accept_loop, name="redshift-proxy", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop accepting and cut every connection still open."""
        self._closed = True
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    # -- connections --------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _serve(self, client: socket.socket) -> None:
        server = None
        try:
            client, first = self._startup(client)
            if first is None:
                return
            server = socket.create_connection(self.upstream)
            self._track(server)
            server.sendall(first)
            with self._lock:
                self.sessions += 1
                self.tls_sessions += isinstance(client, ssl.SSLSocket)
            _relay(client, server)
        except (OSError, ValueError):  # ValueError: select() on a socket close() already cut
            pass
        finally:
            _close(client)
            if server is not None:
                _close(server)

    def _startup(self, client: socket.socket) -> tuple[socket.socket, bytes | None]:
        """Read the client's opening messages: the client's socket (TLS or not), and what to send PostgreSQL first.

        ``None`` instead of the message means: hang up.
        """
        while True:
            body = _read_message(client)
            code = struct.unpack("!i", body[:4])[0]
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                with self._lock:
                    self.ssl_requests += 1
                if code == SSL_REQUEST and self.tls is not None and not isinstance(client, ssl.SSLSocket):
                    client.sendall(b"S")
                    client = self.tls.wrap_socket(client, server_side=True)
                    self._track(client)
                else:
                    client.sendall(b"N")
                continue
            if code == CANCEL_REQUEST:
                return client, _frame(body)
            if code != PROTOCOL_V3:
                return client, None
            parameters = _parse_parameters(body[4:])
            if self.password is not None and not self._authenticate(client, parameters):
                return client, None
            kept = {name: value for name, value in parameters.items() if name not in self.strip}
            with self._lock:
                self.stripped |= set(parameters) - set(kept)
            return client, _frame(struct.pack("!i", PROTOCOL_V3) + _pack_parameters(kept))

    def _authenticate(self, client: socket.socket, parameters: dict[str, str]) -> bool:
        client.sendall(b"R" + struct.pack("!ii", 8, AUTH_CLEARTEXT))
        kind, length = struct.unpack("!ci", _read_exactly(client, 5))
        answer = _read_exactly(client, length - 4).rstrip(b"\x00").decode()
        if kind == b"p" and answer == self.password:
            return True
        user = parameters.get("user", "")
        fields = [b"SFATAL", b"VFATAL", b"C28P01", f'Mpassword authentication failed for user "{user}"'.encode()]
        payload = b"".join(field + b"\x00" for field in fields) + b"\x00"
        client.sendall(b"E" + struct.pack("!i", len(payload) + 4) + payload)
        return False


# -- relaying --------------------------------------------------------------------------------
class ServerHandshake:
    """Passes the server's bytes on; until ReadyForQuery, message by message, trimming ``server_version``."""

    def __init__(self) -> None:
        self.buffer = b""
        self.ready = False

    def feed(self, data: bytes) -> bytes:
        """Take bytes from the server; return the bytes to send the client now."""
        if self.ready:
            return data
        self.buffer += data
        out = b""
        while len(self.buffer) >= 5 and not self.ready:
            kind, length = struct.unpack("!ci", self.buffer[:5])
            if len(self.buffer) < 1 + length:
                break
            body, self.buffer = self.buffer[5 : 1 + length], self.buffer[1 + length :]
            if kind == b"S" and body.startswith(b"server_version\x00"):
                body = b"server_version\x00" + _plain_version(body[len(b"server_version\x00") : -1]) + b"\x00"
            out += kind + struct.pack("!i", len(body) + 4) + body
            self.ready = kind == b"Z"
        if self.ready:
            out, self.buffer = out + self.buffer, b""
        return out


def _plain_version(value: bytes) -> bytes:
    match = re.match(rb"\d+(\.\d+)*", value)
    return match.group(0) if match else value


def _relay(client: socket.socket, server: socket.socket) -> None:
    """Copy bytes both ways in one thread (an SSL socket must not be read and written at once)."""
    handshake = ServerHandshake()
    while True:
        pending = isinstance(client, ssl.SSLSocket) and client.pending() > 0
        readable = [client] if pending else select.select([client, server], [], [])[0]
        for source in readable:
            chunk = source.recv(65536)
            if not chunk:
                return
            if source is client:
                server.sendall(chunk)
            else:
                client.sendall(handshake.feed(chunk))


# -- wire format helpers ---------------------------------------------------------------------
def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client closed during the handshake")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> bytes:
    """Read one untyped startup-phase message and return its body (without the length)."""
    length = struct.unpack("!i", _read_exactly(sock, 4))[0]
    return _read_exactly(sock, length - 4)


def _frame(body: bytes) -> bytes:
    return struct.pack("!i", len(body) + 4) + body


def _parse_parameters(data: bytes) -> dict[str, str]:
    parts = data.split(b"\x00")
    names, values = parts[0:-2:2], parts[1:-2:2]
    return {name.decode(): value.decode() for name, value in zip(names, values)}


def _pack_parameters(parameters: dict[str, str]) -> bytes:
    return b"".join(name.encode() + b"\x00" + value.encode() + b"\x00" for name, value in parameters.items()) + b"\x00"


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# -- a throw-away certificate authority for the proxy's TLS -------------------------------------
def throwaway_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server TLS context for the proxy and the file of the CA that signed it (for ``SSL_CERT_FILE``).

    The driver checks the chain (``verify-ca``) but not the host name, so a certificate
    for ``localhost`` serves any loopback address.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder().subject_name(name("dbt-celery test CA")).issuer_name(name("dbt-celery test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = directory / "ca.pem", directory / "proxy.pem", directory / "proxy.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context, ca_file


# -- the fixture project tests/projects/redshift_small, as the tests use it ---------------------
#: What a first build of redshift_small leaves in its schema: rows of each table, sorted.
REDSHIFT_SMALL_ROWS = {
    "raw_orders": [(1, "ada", 30), (2, "ada", 12), (3, "bob", 7), (4, "cy", 21)],
    "stg_orders": [(1, "ada", 30), (2, "ada", 12), (3, "bob", 7), (4, "cy", 21)],
    "customer_totals": [("ada", 2, 42), ("bob", 1, 7), ("cy", 1, 21)],
    "orders_log": [(1, "ada", 30), (2, "ada", 12), (3, "bob", 7), (4, "cy", 21)],
}
#: The kind of relation each model of redshift_small is (information_schema.tables.table_type).
REDSHIFT_SMALL_KINDS = {
    "raw_orders": "BASE TABLE",
    "stg_orders": "VIEW",
    "customer_totals": "BASE TABLE",
    "orders_log": "BASE TABLE",
}


def proxy_profile(proxy: RedshiftProxy, schema: str, password_env: str) -> dict[str, object]:
    """The built-in Redshift mapping (password auth) of a target reached through ``proxy``."""
    return {
        "type": "redshift", "host": "127.0.0.1", "port": proxy.port, "user": "postgres", "dbname": "test",
        "schema": schema, "password_env": password_env, "sslmode": "disable",
    }  # fmt: skip


def schema_contents(connection: Any, schema: str) -> tuple[dict[str, str], dict[str, list[tuple]]]:
    """The relations of a PostgreSQL schema (name to table_type) and every row of each, sorted."""
    with connection.cursor() as cursor:
        cursor.execute(
            "select table_name, table_type from information_schema.tables where table_schema = %s", (schema,)
        )
        kinds = dict(cursor.fetchall())
        rows = {}
        for name in kinds:
            cursor.execute(f'select * from "{schema}"."{name}" order by 1')
            rows[name] = [tuple(row) for row in cursor.fetchall()]
    return kinds, rows
