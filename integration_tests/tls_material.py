"""Throwaway TLS material for the PostgreSQL fixture and the SSL tests, generated in memory (no files).

One ``TestCA`` signs the server certificate and the client certificates, so a test can run ``verify-full`` against the
fixture server and log in with a client certificate. The server certificate names ``DNS:localhost`` only, on purpose:
connecting to ``127.0.0.1`` with ``verify-full`` must fail with a hostname mismatch. ``other_ca_pem()`` is an
unrelated CA for "wrong CA" tests. Keys are EC P-256 (generated in milliseconds); certificates are valid from a day ago
to 30 days ahead, so clock skew cannot make them "not yet valid".
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_COMMON_NAME = "kc test CA"
SERVER_HOSTNAME = "localhost"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> str:
    encryption = (serialization.BestAvailableEncryption(password.encode()) if password
                  else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()


def _make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    builder = (
        _validity(x509.CertificateBuilder())
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return builder.sign(key, hashes.SHA256()), key


def other_ca_pem() -> str:
    """The certificate of a fresh CA unrelated to any ``TestCA``: trusting it must make verification fail."""
    return _cert_pem(_make_ca(CA_COMMON_NAME)[0])  # same name on purpose: only the key tells them apart


@dataclass
class TestCA:
    """A CA with a server certificate for ``localhost``; ``client_certificate()`` issues client certificates."""

    __test__ = False  # not a pytest test class despite the name

    ca_pem: str = ""
    server_cert_pem: str = ""
    server_key_pem: str = field(default="", repr=False)
    _ca_cert: x509.Certificate | None = field(default=None, repr=False)
    _ca_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)

    @classmethod
    def create(cls) -> "TestCA":
        ca_cert, ca_key = _make_ca(CA_COMMON_NAME)
        server_cert, server_key = cls._issue(ca_cert, ca_key, SERVER_HOSTNAME, server=True)
        return cls(ca_pem=_cert_pem(ca_cert), server_cert_pem=_cert_pem(server_cert),
                   server_key_pem=_key_pem(server_key), _ca_cert=ca_cert, _ca_key=ca_key)

    @staticmethod
    def _issue(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str, *, server: bool
               ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = _key()
        builder = (
            _validity(x509.CertificateBuilder())
            .subject_name(_name(common_name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        )
        if server:  # DNS:localhost only, no IP address: verify-full against 127.0.0.1 must fail
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    def client_certificate(self, common_name: str, key_password: str | None = None) -> tuple[str, str]:
        """``(certificate PEM, private key PEM)`` for a client whose CN is ``common_name`` (PostgreSQL's ``cert``
        authentication maps the CN to the role name). The key is PKCS#8, encrypted with ``key_password`` if given
        (libpq reads it with ``sslpassword``)."""
        if self._ca_cert is None or self._ca_key is None:
            raise RuntimeError("TestCA has no signing key: build it with TestCA.create()")
        cert, key = self._issue(self._ca_cert, self._ca_key, common_name, server=False)
        return _cert_pem(cert), _key_pem(key, key_password)
