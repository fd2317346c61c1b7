"""TLS for PostgreSQL connections (``store.ssl_mode``): checking the PEM texts a config gives, and handing them to
libpq, which reads certificates and keys only from files.

The files live only while a connection opens: a private folder (``tempfile.mkdtemp``: mode 0700, owned by this
process's user) holds them, each written 0600 (libpq refuses a client key that others may read), and the folder is
removed as soon as libpq has read them (``connect`` returns or fails), so no certificate or key outlives the
handshake on disk. Nothing here logs a certificate, a key or a password; errors name the field, never its value.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from ..config import PostgresSslConfig


def check_certificates(text: str, field: str) -> None:
    """ValueError naming ``field`` unless ``text`` holds at least one PEM certificate."""
    from cryptography import x509

    try:
        certificates = x509.load_pem_x509_certificates(text.encode("utf-8"))
    except ValueError:
        certificates = []
    if not certificates:
        raise ValueError(
            f"{field} is not a PEM certificate: paste the whole text from -----BEGIN CERTIFICATE----- to "
            "-----END CERTIFICATE-----"
        )


def check_private_key(text: str, password: str | None) -> None:
    """ValueError unless ``text`` is a PEM private key that ``password`` (if any) opens: found here, with the field's
    name, rather than as libpq's "could not load private key file" during the handshake."""
    from cryptography.hazmat.primitives import serialization

    data = text.encode("utf-8")
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise ValueError("client_key is not a PEM private key (-----BEGIN PRIVATE KEY----- … -----END PRIVATE KEY-----)")
    try:
        serialization.load_pem_private_key(data, password.encode("utf-8") if password else None)
    except TypeError:
        if password:
            raise ValueError("client_key is not encrypted: leave client_key_password empty") from None
        raise ValueError("client_key is encrypted: give its passphrase in client_key_password") from None
    except ValueError:
        if password:
            raise ValueError("client_key_password does not open client_key (or client_key is not a valid key)") from None
        raise ValueError("client_key is not a valid PEM private key") from None


@contextlib.contextmanager
def libpq_ssl_params(ssl: "PostgresSslConfig") -> Iterator[dict[str, Any]]:
    """libpq connection parameters for ``ssl``; the files they name exist until the block ends."""
    params: dict[str, Any] = {"sslmode": ssl.mode}
    files: dict[str, str] = {}
    if ssl.uses_ca():
        files["sslrootcert"] = ssl.ca_certificate or ""
    if ssl.uses_client_certificate():
        files["sslcert"] = ssl.client_certificate or ""
        files["sslkey"] = ssl.client_key or ""
        # always set when a key is given: with no sslpassword libpq may fall back to OpenSSL's terminal prompt
        params["sslpassword"] = ssl.client_key_password or ""
    if not files:
        yield params
        return
    folder = tempfile.mkdtemp(prefix="kc-pg-tls-")
    try:
        for param, text in files.items():
            path = os.path.join(folder, f"{param}.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text if text.endswith("\n") else text + "\n")
            params[param] = path
        yield params
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def explain(error_text: str) -> str | None:
    """What to change for a TLS failure libpq reported (None when the error is not about TLS)."""
    text = error_text.lower()
    if "does not match host name" in text:
        return (
            "with ssl_mode verify-full, store.host must be a name the server's certificate lists (use that name, "
            "or verify-ca to check only the CA)"
        )
    if "certificate verify failed" in text:
        return (
            "the server's certificate is not signed by store.ssl_mode.ca_certificate: paste the CA certificate that "
            "signed it (the whole chain up to its root)"
        )
    if "root certificate file" in text:
        return "paste the server's CA certificate into store.ssl_mode.ca_certificate"
    if "does not support ssl" in text:
        return "the server does not offer SSL: choose ssl_mode disable, allow or prefer, or turn ssl on in the server"
    if "pg_hba.conf" in text and "no encryption" in text:  # "no pg_hba.conf entry …" or "pg_hba.conf rejects …"
        return "the server accepts this user only over SSL: choose ssl_mode require, verify-ca or verify-full"
    if "certificate" in text and ("authentication failed" in text or "requires a valid client certificate" in text):
        return (
            "the server authenticates this user by client certificate: give store.ssl_mode.client_certificate and "
            "client_key, signed by a CA the server trusts, with the user name as the certificate's common name"
        )
    return None
