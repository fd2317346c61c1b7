"""store.ssl_mode and store.tunnel_method without a server: the config's checks (each naming the field, never
echoing a certificate, key or password), the migration of the string ssl_mode of configs written before 0.1.2, the
private temporary files libpq reads certificates from, and how ``connect`` assembles libpq's parameters and maps its
failures. The real handshakes (verify-full, client certificates, both SSH logins) are proven against real servers in
integration_tests/destination/test_postgres_tls_and_tunnel.py."""
from __future__ import annotations

import datetime
import json
import os
import stat
from pathlib import Path

import asyncssh
import jsonschema
import psycopg
import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from destination_collection.config import migrate_config, parse_config
from destination_collection.stores import postgres_connection, postgres_tls

SPEC = json.loads((Path(__file__).resolve().parents[2] / "destination_collection" / "spec.json").read_text())
BASE = {"store_type": "postgres", "host": "db.example.com", "port": 5432, "database": "d", "username": "u", "password": "pg-secret-1"}
KEY_PASSWORD = "key-pass-Zq9"


def _certificate(common_name: str, key_password: str | None = None) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    encryption = serialization.BestAvailableEncryption(key_password.encode()) if key_password else serialization.NoEncryption()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


CA_PEM, _ = _certificate("test CA")
CLIENT_PEM, CLIENT_KEY = _certificate("u")
_, ENCRYPTED_KEY = _certificate("u", KEY_PASSWORD)
SSH_KEY = asyncssh.generate_private_key("ssh-ed25519").export_private_key().decode()
SECRETS = (CA_PEM, CLIENT_PEM, CLIENT_KEY, ENCRYPTED_KEY, SSH_KEY, KEY_PASSWORD, "pg-secret-1", "ssh-pw-77")


def _store(**fields) -> dict:
    return {"store": {**BASE, **fields}}


def _invalid(config: dict) -> str:
    with pytest.raises(AirbyteTracedException) as caught:
        parse_config(config)
    assert caught.value.failure_type == FailureType.config_error
    message = caught.value.message
    for secret in SECRETS:
        for line in secret.splitlines():
            if len(line) > 12 and "-----" not in line:
                assert line not in message, "a secret reached the error message"
    return message


# -- the migration of configs written before 0.1.2 ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"])
def test_a_string_ssl_mode_still_loads_and_passes_the_spec(mode):
    legacy = _store(ssl_mode=mode)
    migrated = migrate_config(legacy)
    assert migrated["store"]["ssl_mode"] == {"mode": mode}
    assert legacy["store"]["ssl_mode"] == mode  # the stored config is not touched
    jsonschema.Draft7Validator(SPEC["connectionSpecification"]).validate(migrated)
    parsed = parse_config(legacy).store.ssl_mode
    assert parsed.mode == mode and not parsed.uses_ca() and not parsed.uses_client_certificate()


def test_migration_leaves_other_configs_alone():
    assert migrate_config(_store(ssl_mode={"mode": "require"})) == _store(ssl_mode={"mode": "require"})
    assert migrate_config({"store": {"store_type": "duckdb", "path": "x.duckdb"}}) == {"store": {"store_type": "duckdb", "path": "x.duckdb"}}
    assert migrate_config(["not", "a", "config"]) == ["not", "a", "config"]
    assert parse_config(_store()).store.ssl_mode.mode == "prefer"
    assert parse_config(_store()).store.tunnel_method.enabled is False


def test_the_spec_accepts_every_documented_shape():
    validator = jsonschema.Draft7Validator(SPEC["connectionSpecification"])
    for config in (
        _store(ssl_mode={"mode": "verify-full", "ca_certificate": CA_PEM, "client_certificate": CLIENT_PEM, "client_key": ENCRYPTED_KEY, "client_key_password": KEY_PASSWORD}),
        _store(ssl_mode={"mode": "require", "client_certificate": CLIENT_PEM, "client_key": CLIENT_KEY}),
        _store(tunnel_method={"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "jump", "tunnel_port": 22, "tunnel_user": "t", "ssh_key": SSH_KEY}),
        _store(tunnel_method={"tunnel_method": "SSH_PASSWORD_AUTH", "tunnel_host": "jump", "tunnel_port": 22, "tunnel_user": "t", "tunnel_user_password": "ssh-pw-77"}),
        _store(tunnel_method={"tunnel_method": "NO_TUNNEL"}),
    ):
        validator.validate(config)
        parse_config(config)
    with pytest.raises(jsonschema.ValidationError):  # the UI asks for the key when SSH_KEY_AUTH is chosen
        validator.validate(_store(tunnel_method={"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "jump", "tunnel_port": 22, "tunnel_user": "t"}))


def test_every_certificate_key_and_password_is_a_secret_in_the_spec():
    store = next(o for o in SPEC["connectionSpecification"]["properties"]["store"]["oneOf"] if o["properties"]["store_type"]["const"] == "postgres")
    fields = {}
    for choice in ("ssl_mode", "tunnel_method"):
        for option in store["properties"][choice]["oneOf"]:
            fields.update(option["properties"])
    for name in ("ca_certificate", "client_certificate", "client_key", "client_key_password", "ssh_key", "tunnel_user_password"):
        assert fields[name].get("airbyte_secret") is True, name


# -- the config's checks -----------------------------------------------------------------------------------------


def test_tls_material_is_checked_when_the_config_is_parsed():
    assert "ca_certificate is not a PEM certificate" in _invalid(_store(ssl_mode={"mode": "verify-ca", "ca_certificate": CLIENT_KEY}))
    assert "ca_certificate is not a PEM certificate" in _invalid(_store(ssl_mode={"mode": "verify-full", "ca_certificate": "garbage"}))
    assert "go together" in _invalid(_store(ssl_mode={"mode": "verify-full", "ca_certificate": CA_PEM, "client_certificate": CLIENT_PEM}))
    assert "go together" in _invalid(_store(ssl_mode={"mode": "require", "client_key": CLIENT_KEY}))
    assert "client_certificate is not a PEM certificate" in _invalid(_store(ssl_mode={"mode": "require", "client_certificate": CLIENT_KEY, "client_key": CLIENT_KEY}))
    assert "client_key is not a PEM private key" in _invalid(_store(ssl_mode={"mode": "require", "client_certificate": CLIENT_PEM, "client_key": CLIENT_PEM}))
    assert "encrypted: give its passphrase in client_key_password" in _invalid(
        _store(ssl_mode={"mode": "require", "client_certificate": CLIENT_PEM, "client_key": ENCRYPTED_KEY}))
    assert "client_key_password does not open client_key" in _invalid(
        _store(ssl_mode={"mode": "require", "client_certificate": CLIENT_PEM, "client_key": ENCRYPTED_KEY, "client_key_password": "wrong"}))
    assert "not encrypted: leave client_key_password empty" in _invalid(
        _store(ssl_mode={"mode": "require", "client_certificate": CLIENT_PEM, "client_key": CLIENT_KEY, "client_key_password": KEY_PASSWORD}))
    parsed = parse_config(_store(ssl_mode={"mode": "verify-full", "ca_certificate": CA_PEM, "client_certificate": CLIENT_PEM,
                                           "client_key": ENCRYPTED_KEY, "client_key_password": KEY_PASSWORD})).store.ssl_mode
    assert parsed.uses_ca() and parsed.uses_client_certificate()
    assert CA_PEM not in repr(parsed) and ENCRYPTED_KEY not in repr(parsed) and KEY_PASSWORD not in repr(parsed)


def test_cleared_fields_and_fields_a_mode_does_not_use_are_ignored():
    parsed = parse_config(_store(ssl_mode={"mode": "verify-ca", "ca_certificate": CA_PEM, "client_certificate": " ", "client_key": ""})).store.ssl_mode
    assert parsed.uses_ca() and not parsed.uses_client_certificate()
    stale = parse_config(_store(ssl_mode={"mode": "prefer", "ca_certificate": CA_PEM, "client_certificate": CLIENT_PEM, "client_key": CLIENT_KEY})).store.ssl_mode
    assert not stale.uses_ca() and not stale.uses_client_certificate()  # libpq is given only what the mode uses


def test_tunnel_settings_are_checked_when_the_config_is_parsed():
    key_auth = {"tunnel_method": "SSH_KEY_AUTH", "tunnel_host": "jump", "tunnel_user": "t", "ssh_key": SSH_KEY}
    assert "SSH_KEY_AUTH needs ssh_key" in _invalid(_store(tunnel_method={**key_auth, "ssh_key": ""}))
    assert "SSH_PASSWORD_AUTH needs tunnel_host, tunnel_user_password" in _invalid(
        _store(tunnel_method={"tunnel_method": "SSH_PASSWORD_AUTH", "tunnel_user": "t"}))
    assert "ssh_key is not a private key" in _invalid(_store(tunnel_method={**key_auth, "ssh_key": CLIENT_PEM}))
    protected = asyncssh.generate_private_key("ssh-ed25519").export_private_key(passphrase="ssh-pw-77").decode()
    assert "protected by a passphrase" in _invalid(_store(tunnel_method={**key_auth, "ssh_key": protected}))
    assert "tunnel_host_key line 1 is not a public key" in _invalid(_store(tunnel_method={**key_auth, "tunnel_host_key": "jump AAAA"}))
    assert "tunnel_port" in _invalid(_store(tunnel_method={**key_auth, "tunnel_port": 0}))
    pem_key = asyncssh.generate_private_key("ssh-rsa", key_size=2048).export_private_key("pkcs1-pem").decode()
    assert parse_config(_store(tunnel_method={**key_auth, "ssh_key": pem_key})).store.tunnel_method.enabled


def test_host_keys_read_as_ssh_keyscan_and_pub_files_write_them():
    from destination_collection.stores.ssh_tunnel import load_host_keys

    first = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().strip()
    second = asyncssh.generate_private_key("ecdsa-sha2-nistp256").export_public_key().decode().strip()
    text = f"# jump.example.com:22 SSH-2.0-OpenSSH_9.2\njump.example.com {first}\n\n{second} ops@laptop\n"
    keys = load_host_keys(text)
    assert [k.export_public_key().decode().split()[:2] for k in keys] == [first.split()[:2], second.split()[:2]]
    with pytest.raises(ValueError, match="holds no public key"):
        load_host_keys("# only a comment\n")


# -- the private files libpq reads -----------------------------------------------------------------------------------


def test_certificates_live_in_a_private_folder_only_while_the_connection_opens():
    ssl = parse_config(_store(ssl_mode={"mode": "verify-full", "ca_certificate": CA_PEM, "client_certificate": CLIENT_PEM,
                                        "client_key": ENCRYPTED_KEY, "client_key_password": KEY_PASSWORD})).store.ssl_mode
    with postgres_tls.libpq_ssl_params(ssl) as params:
        assert params["sslmode"] == "verify-full" and params["sslpassword"] == KEY_PASSWORD
        folder = Path(params["sslrootcert"]).parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
        for param, text in (("sslrootcert", CA_PEM), ("sslcert", CLIENT_PEM), ("sslkey", ENCRYPTED_KEY)):
            path = Path(params[param])
            assert path.parent == folder and stat.S_IMODE(path.stat().st_mode) == 0o600
            assert path.read_text() == text
    assert not folder.exists()
    with pytest.raises(RuntimeError):
        with postgres_tls.libpq_ssl_params(ssl) as params:
            folder = Path(params["sslrootcert"]).parent
            raise RuntimeError("the handshake failed")
    assert not folder.exists()


def test_modes_without_material_write_no_file():
    for config in (_store(), _store(ssl_mode="verify-full"), _store(ssl_mode={"mode": "require", "ca_certificate": CA_PEM})):
        with postgres_tls.libpq_ssl_params(parse_config(config).store.ssl_mode) as params:
            assert set(params) == {"sslmode"}


# -- connect: libpq's parameters and its failures ------------------------------------------------------------------


class _Captured(Exception):
    pass


def _capture_connect(monkeypatch, error: str | None = None) -> list[dict]:
    seen: list[dict] = []

    def fake(cls, **kwargs):
        files = {k: Path(v).exists() for k, v in kwargs.items() if k in ("sslrootcert", "sslcert", "sslkey")}
        seen.append({**kwargs, "_class": cls, "_files_present": files})
        if error is not None:
            raise psycopg.OperationalError(error)
        raise _Captured()

    monkeypatch.setattr(psycopg.Connection, "connect", classmethod(fake))
    return seen


def test_connect_gives_libpq_the_files_and_removes_them(monkeypatch):
    seen = _capture_connect(monkeypatch)
    config = parse_config(_store(ssl_mode={"mode": "verify-ca", "ca_certificate": CA_PEM})).store
    with pytest.raises(_Captured):
        postgres_connection.connect(config)
    (call,) = seen
    assert call["host"] == "db.example.com" and "hostaddr" not in call and call["sslmode"] == "verify-ca"
    assert call["_files_present"] == {"sslrootcert": True} and not Path(call["sslrootcert"]).exists()
    assert call["connect_timeout"] == postgres_connection.CONNECT_TIMEOUT_SECONDS


class _FakeTunnel:
    opened: list["_FakeTunnel"] = []

    def __init__(self, config, host, port):
        self.target, self.closed = (host, port), 0
        _FakeTunnel.opened.append(self)

    def open(self) -> int:
        return 40404

    def close(self) -> None:
        self.closed += 1


def test_through_a_tunnel_libpq_dials_the_local_port_but_verifies_the_configured_host(monkeypatch):
    _FakeTunnel.opened.clear()
    monkeypatch.setattr(postgres_connection, "new_tunnel", lambda config: _FakeTunnel(config.tunnel_method, config.host, config.port))
    seen = _capture_connect(monkeypatch)
    config = parse_config(_store(port=6543, tunnel_method={"tunnel_method": "SSH_PASSWORD_AUTH", "tunnel_host": "jump", "tunnel_user": "t",
                                                           "tunnel_user_password": "ssh-pw-77"})).store
    with pytest.raises(_Captured):
        postgres_connection.connect(config)
    (call,) = seen
    assert (call["host"], call["hostaddr"], call["port"]) == ("db.example.com", "127.0.0.1", 40404)
    assert call["_class"] is postgres_connection.TunneledConnection
    (tunnel,) = _FakeTunnel.opened
    assert tunnel.target == ("db.example.com", 6543) and tunnel.closed == 1  # a failed connect closes its tunnel


def test_a_tunneled_connection_closes_its_tunnel():
    tunnel = _FakeTunnel(None, "h", 1)
    conn = postgres_connection.TunneledConnection.__new__(postgres_connection.TunneledConnection)
    conn.attach(tunnel)
    try:
        conn.close()
    except Exception:  # noqa: BLE001 - a connection that never connected may complain; the tunnel must still close
        pass
    assert tunnel.closed == 1


@pytest.mark.parametrize(
    "libpq_says, advice",
    [
        ('server certificate for "db.internal" does not match host name "db.example.com"', "must be a name the server's certificate lists"),
        ("SSL error: certificate verify failed", "not signed by store.ssl_mode.ca_certificate"),
        ('root certificate file "/root/.postgresql/root.crt" does not exist', "paste the server's CA certificate"),
        ("server does not support SSL, but SSL was required", "does not offer SSL"),
        ('no pg_hba.conf entry for host "10.0.0.1", user "u", database "d", no encryption', "only over SSL"),
        ('certificate authentication failed for user "u"', "authenticates this user by client certificate"),
    ],
)
def test_tls_failures_say_what_to_change(monkeypatch, libpq_says, advice):
    _capture_connect(monkeypatch, error=f'connection to server at "db.example.com" (10.0.0.1), port 5432 failed: {libpq_says}')
    with pytest.raises(AirbyteTracedException) as caught:
        postgres_connection.connect(parse_config(_store(ssl_mode={"mode": "verify-full", "ca_certificate": CA_PEM})).store)
    assert caught.value.failure_type == FailureType.config_error
    assert advice in caught.value.message and "ssl_mode verify-full" in caught.value.message
    assert "pg-secret-1" not in caught.value.message


def test_an_unreachable_server_is_transient(monkeypatch):
    _capture_connect(monkeypatch, error="connection to server at \"db.example.com\" (10.0.0.1), port 5432 failed: Connection refused")
    with pytest.raises(AirbyteTracedException) as caught:
        postgres_connection.connect(parse_config(_store()).store)
    assert caught.value.failure_type == FailureType.transient_error
    assert "db.example.com:5432" in caught.value.message
