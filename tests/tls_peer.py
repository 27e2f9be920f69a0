"""What a TLS server presents to a new connection: the certificate-rotation tests compare it before
and after a swap on disk, so they dial with `ssl` directly rather than through gRPC, which hides it."""

from __future__ import annotations

import socket
import ssl

from cryptography import x509

from ragline.dev_certificates import CertificateFiles


def served_certificate(address: str, files: CertificateFiles) -> x509.Certificate:
    """The certificate a new TLS connection to `address` is shown, presenting the client pair of `files`."""
    context = ssl.create_default_context(cafile=str(files.ca))
    context.load_cert_chain(str(files.client_cert), str(files.client_key))
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as connection,
    ):
        der = connection.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)
