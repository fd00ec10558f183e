"""A loopback stand-in for the two AWS APIs Redshift's IAM auth calls, for the tests only.

redshift_connector fetches temporary database credentials with boto3: ``redshift``
(``GetClusterCredentials`` for ``method: iam``, ``GetClusterCredentialsWithIAM`` for
``method: iam_role``) or ``redshift-serverless`` (``GetCredentials``). boto3 sends those
calls wherever ``AWS_ENDPOINT_URL_REDSHIFT`` / ``AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS``
point, so pointing them here keeps the whole IAM path real (dbt-redshift, the driver,
boto3's signing) except AWS itself. This server checks nothing a real AWS would check
(signatures, policies); it records what it was asked and by which access key, and
issues the one database user and password it was given.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

_SCOPE = re.compile(r"Credential=([^/]+)/[^/]+/([^/]+)/([^/]+)/aws4_request")
_EXPIRATION = "2099-01-01T00:00:00Z"


class FakeAWS:
    """An HTTP server on a free loopback port answering Redshift's credential calls."""

    def __init__(self, db_user: str, db_password: str) -> None:
        self.db_user = db_user
        self.db_password = db_password
        #: Every call: service, region and access key id (from the signature), action, parameters.
        self.calls: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))

    @property
    def url(self) -> str:
        """The endpoint URL to give boto3."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Environment variables that send boto3's Redshift calls here (and keep it off the metadata service)."""
        return {
            "AWS_ENDPOINT_URL_REDSHIFT": self.url,
            "AWS_ENDPOINT_URL_REDSHIFT_SERVERLESS": self.url,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def __enter__(self) -> FakeAWS:
        threading.Thread(target=self._server.serve_forever, name="fake-aws", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, call: dict[str, Any]) -> tuple[int, str, str]:
        """The status, content type and body for one recorded call."""
        self.calls.append(call)
        action, params = call["action"], call["params"]
        if action == "GetCredentials":  # redshift-serverless, JSON protocol
            body = {"dbUser": self.db_user, "dbPassword": self.db_password, "expiration": 4070908800}
            return 200, "application/x-amz-json-1.1", json.dumps(body)
        if action in ("GetClusterCredentials", "GetClusterCredentialsWithIAM") and "ClusterIdentifier" in params:
            fields = f"<DbUser>{self.db_user}</DbUser><DbPassword>{self.db_password}</DbPassword>"
            fields += f"<Expiration>{_EXPIRATION}</Expiration>"
            return 200, "text/xml", _query_response(action, fields)
        # A host that is no registered custom domain name, as AWS answers it; the driver
        # then asks again with the cluster identifier.
        return 400, "text/xml", _query_error("CustomDomainAssociationNotFoundFault", "not a custom domain")


def _handler(fake: FakeAWS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            scope = _SCOPE.search(self.headers.get("Authorization", ""))
            key_id, region, service = scope.groups() if scope else (None, None, None)
            target = self.headers.get("X-Amz-Target")
            if target:
                action, params = target.split(".")[-1], json.loads(body or "{}")
            else:
                params = dict(parse_qsl(body))
                action = params.pop("Action", "")
            call = {"service": service, "region": region, "access_key_id": key_id, "action": action, "params": params}
            status, content_type, text = fake.answer(call)
            payload = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


def _query_response(action: str, fields: str) -> str:
    namespace = "http://redshift.amazonaws.com/doc/2012-12-01/"
    return (
        f'<{action}Response xmlns="{namespace}"><{action}Result>{fields}</{action}Result>'
        f"<ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></{action}Response>"
    )


def _query_error(code: str, message: str) -> str:
    return (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        "<RequestId>fake</RequestId></ErrorResponse>"
    )
