"""TLS material for the loopback fakes: one trustme CA per test session, a server certificate for loopback.

The CA bundle file holds only the trustme CA, so a client that trusts it trusts nothing else: a test that
accidentally reaches a real Microsoft endpoint fails on verification instead of talking to the internet.
"""

from __future__ import annotations

import atexit
import shutil
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

#: Environment variables that decide which CAs ``requests`` (and so msal, azure-core) and ``ssl`` trust.
#: ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` beat ``Session.verify = True``, so they must point at the test CA.
CA_ENV_VARS: tuple[str, ...] = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")

#: Names the loopback server certificate is valid for.
SERVER_IDENTITIES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TLSMaterial:
    """A CA, a server certificate it signed, and the PEM files written for clients and servers."""

    ca: trustme.CA
    server_cert: trustme.LeafCert
    directory: Path
    #: PEM file with only the CA certificate: what clients must trust.
    ca_bundle: str
    #: PEM file with the server certificate chain (leaf first).
    cert_chain: str
    #: PEM file with the server's private key.
    key_file: str

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_chain, self.key_file)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_bundle)
        return ctx


def make_tls_material(directory: Path | None = None) -> TLSMaterial:
    """Create a fresh CA and loopback server certificate, written below ``directory`` (a temp dir if None)."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="fake-tls-"))
        atexit.register(shutil.rmtree, directory, True)
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="Loopback fakes test CA")
    server_cert = ca.issue_cert(*SERVER_IDENTITIES, common_name="127.0.0.1")
    ca_bundle = directory / "ca.pem"
    cert_chain = directory / "server-chain.pem"
    key_file = directory / "server-key.pem"
    ca.cert_pem.write_to_path(str(ca_bundle))
    cert_chain.write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    server_cert.private_key_pem.write_to_path(str(key_file))
    return TLSMaterial(
        ca=ca,
        server_cert=server_cert,
        directory=directory,
        ca_bundle=str(ca_bundle),
        cert_chain=str(cert_chain),
        key_file=str(key_file),
    )


_default: TLSMaterial | None = None
_default_lock = threading.Lock()


def default_tls() -> TLSMaterial:
    """The process-wide TLS material: what the ``tls_ca`` fixture returns and what fakes use by default."""
    global _default
    with _default_lock:
        if _default is None:
            _default = make_tls_material()
        return _default
