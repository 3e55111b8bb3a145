"""
Server certificates (given, or self-signed once and reused) and the client
settings for opportunistic and required TLS, exercised with real handshakes
in memory (twisted.test.iosim), no sockets.
"""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519
from cryptography.x509.oid import NameOID
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test.iosim import connectedServerAndClient

from twistedmail.config import ConfigError
from twistedmail.tls import (
    CertificateError,
    client_tls_options,
    self_signed_paths,
    server_tls_options,
)


def leaf_of(options: CertificateOptions) -> x509.Certificate:
    # server_tls_options hands cryptography objects to CertificateOptions
    # (pyOpenSSL deprecates its own X509/PKey there).
    assert isinstance(options.certificate, x509.Certificate)
    return options.certificate


def san_of(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def make_key_and_cert(
    tmp_path: Path, name: str, *, key: object = None, days: int = 30, separate: bool = True
) -> tuple[str, str]:
    private = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())  # type: ignore[attr-defined]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(private, hashes.SHA256())  # type: ignore[arg-type]
    )
    key_pem = private.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_path = tmp_path / f"{name}.crt"
    key_path = tmp_path / f"{name}.key"
    if separate:
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
    else:
        cert_path.write_bytes(key_pem + cert_pem)
    return str(cert_path), str(key_path)


class Recorder(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.lost = True


def handshake(server_options, client_options) -> tuple[Recorder, Recorder]:
    """Connect a TLS server and client in memory; the client says hello."""
    clock = Clock()  # TLS transports gather small writes until the next tick
    server_tls = TLSMemoryBIOFactory(
        server_options, False, Factory.forProtocol(Recorder), clock=clock
    )
    client_tls = TLSMemoryBIOFactory(
        client_options, True, Factory.forProtocol(Recorder), clock=clock
    )
    server_protocol: list[Recorder] = []
    client_protocol: list[Recorder] = []

    def build(factory, into):
        protocol = factory.buildProtocol(None)
        into.append(protocol.wrappedProtocol)
        return protocol

    _, _, pump = connectedServerAndClient(
        lambda: build(server_tls, server_protocol), lambda: build(client_tls, client_protocol)
    )
    client_protocol[0].transport.write(b"hello")  # type: ignore[union-attr]
    for _ in range(5):
        clock.advance(0)
        pump.flush()
    return server_protocol[0], client_protocol[0]


# --- Self-signed ---------------------------------------------------------------------


def test_self_signed_is_generated_for_the_hostname(tmp_path):
    options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    cert = leaf_of(options)
    names = san_of(cert).get_values_for_type(x509.DNSName)
    assert "mail.example.test" in names
    assert "localhost" in names
    pem, crt = self_signed_paths(str(tmp_path))
    assert os.path.exists(pem) and os.path.exists(crt)
    assert x509.load_pem_x509_certificate(Path(crt).read_bytes()) == cert


def test_self_signed_key_is_private(tmp_path):
    server_tls_options(str(tmp_path), None, None, "mail.example.test")
    pem, crt = self_signed_paths(str(tmp_path))
    assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(pem)).st_mode) == 0o700
    assert b"PRIVATE KEY" not in Path(crt).read_bytes()
    assert [p for p in os.listdir(os.path.dirname(pem)) if p.startswith(".tmp")] == []


def test_self_signed_is_made_once_and_reused(tmp_path):
    first = leaf_of(server_tls_options(str(tmp_path), None, None, "mail.example.test"))
    pem, _ = self_signed_paths(str(tmp_path))
    before = Path(pem).read_bytes()
    second = leaf_of(server_tls_options(str(tmp_path), None, None, "mail.example.test"))
    assert first == second
    assert Path(pem).read_bytes() == before


def test_self_signed_is_remade_for_a_new_hostname(tmp_path):
    first = leaf_of(server_tls_options(str(tmp_path), None, None, "old.example.test"))
    second = leaf_of(server_tls_options(str(tmp_path), None, None, "new.example.test"))
    assert first != second
    assert "new.example.test" in san_of(second).get_values_for_type(x509.DNSName)


def test_damaged_self_signed_is_remade(tmp_path):
    server_tls_options(str(tmp_path), None, None, "mail.example.test")
    pem, _ = self_signed_paths(str(tmp_path))
    Path(pem).write_bytes(b"garbage")
    options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    assert "mail.example.test" in san_of(leaf_of(options)).get_values_for_type(x509.DNSName)


def test_expiring_self_signed_is_remade(tmp_path):
    pem, _ = self_signed_paths(str(tmp_path))
    os.makedirs(os.path.dirname(pem))
    cert_path, _ = make_key_and_cert(tmp_path, "mail.example.test", days=5, separate=False)
    os.replace(cert_path, pem)
    old = x509.load_pem_x509_certificate(Path(pem).read_bytes())
    options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    assert leaf_of(options) != old


def test_ip_hostname_gets_an_ip_san(tmp_path):
    options = server_tls_options(str(tmp_path), None, None, "192.0.2.7")
    addresses = [str(a) for a in san_of(leaf_of(options)).get_values_for_type(x509.IPAddress)]
    assert "192.0.2.7" in addresses


def test_self_signed_in_an_unwritable_place_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CertificateError, match="cannot write a self-signed certificate"):
        server_tls_options(str(blocker), None, None, "mail.example.test")


# --- Given files ---------------------------------------------------------------------


def test_given_files_are_used(tmp_path):
    cert, key = make_key_and_cert(tmp_path, "given.example.test")
    options = server_tls_options(str(tmp_path / "data"), cert, key, "ignored.example.test")
    assert leaf_of(options) == x509.load_pem_x509_certificate(Path(cert).read_bytes())
    assert not os.path.exists(tmp_path / "data"), "nothing is generated when files are given"


def test_key_and_certificate_in_one_file(tmp_path):
    both, _ = make_key_and_cert(tmp_path, "both.example.test", separate=False)
    options = server_tls_options(str(tmp_path), both, None, "both.example.test")
    assert "both.example.test" in san_of(leaf_of(options)).get_values_for_type(x509.DNSName)


def test_rsa_keys_work_too(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert, key_path = make_key_and_cert(tmp_path, "rsa.example.test", key=key)
    server_tls_options(str(tmp_path), cert, key_path, "rsa.example.test")


def test_certificate_errors_are_config_errors():
    assert issubclass(CertificateError, ConfigError)


@pytest.mark.parametrize(
    ("cert_text", "key_text", "words"),
    [
        (b"not pem", None, "holds no PEM certificate"),
        (None, b"not pem", "holds no usable PEM private key"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, cert_text, key_text, words):
    cert, key = make_key_and_cert(tmp_path, "bad.example.test")
    if cert_text is not None:
        Path(cert).write_bytes(cert_text)
    if key_text is not None:
        Path(key).write_bytes(key_text)
    with pytest.raises(CertificateError) as info:
        server_tls_options(str(tmp_path), cert, key, "bad.example.test")
    assert words in str(info.value)
    assert (cert if cert_text else key) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path):
    cert, _ = make_key_and_cert(tmp_path, "m.example.test")
    missing = str(tmp_path / "missing.key")
    with pytest.raises(CertificateError, match=f"cannot read {missing}"):
        server_tls_options(str(tmp_path), cert, missing, "m.example.test")


def test_mismatched_key_is_a_clear_error(tmp_path):
    cert, _ = make_key_and_cert(tmp_path, "one.example.test")
    _, other_key = make_key_and_cert(tmp_path, "two.example.test")
    with pytest.raises(CertificateError, match="does not belong to the certificate"):
        server_tls_options(str(tmp_path), cert, other_key, "one.example.test")


def test_encrypted_key_is_a_clear_error(tmp_path):
    cert, key = make_key_and_cert(tmp_path, "enc.example.test")
    private = serialization.load_pem_private_key(Path(key).read_bytes(), password=None)
    Path(key).write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    with pytest.raises(CertificateError, match="encrypted"):
        server_tls_options(str(tmp_path), cert, key, "enc.example.test")


def test_key_that_cannot_sign_is_refused(tmp_path):
    cert, key = make_key_and_cert(tmp_path, "x.example.test")
    Path(key).write_bytes(
        x25519.X25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(CertificateError, match="cannot sign"):
        server_tls_options(str(tmp_path), cert, key, "x.example.test")


# --- Handshakes ------------------------------------------------------------------------


def test_opportunistic_client_accepts_a_self_signed_server(tmp_path):
    server_options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    server, client = handshake(server_options, client_tls_options("mail.example.test", False))
    assert server.data == b"hello"
    assert not client.lost


def test_opportunistic_client_accepts_a_wrong_name(tmp_path):
    server_options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    server, _ = handshake(server_options, client_tls_options("other.example.test", False))
    assert server.data == b"hello"


def test_opportunistic_client_to_an_ip_literal(tmp_path):
    server_options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    server, _ = handshake(server_options, client_tls_options("127.0.0.1", False))
    assert server.data == b"hello"


def test_verifying_client_trusts_the_given_root(tmp_path):
    server_options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    _, crt = self_signed_paths(str(tmp_path))
    root = Certificate.loadPEM(Path(crt).read_bytes())
    server, client = handshake(
        server_options, client_tls_options("mail.example.test", True, [root])
    )
    assert server.data == b"hello"
    assert not client.lost


def test_verifying_client_refuses_an_unknown_certificate(tmp_path):
    server_options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    server, client = handshake(server_options, client_tls_options("mail.example.test", True))
    assert server.data == b""
    assert client.lost


def test_verifying_client_refuses_the_wrong_name(tmp_path):
    server_options = server_tls_options(str(tmp_path), None, None, "mail.example.test")
    _, crt = self_signed_paths(str(tmp_path))
    root = Certificate.loadPEM(Path(crt).read_bytes())
    server, client = handshake(
        server_options, client_tls_options("other.example.test", True, [root])
    )
    assert server.data == b""
    assert client.lost


def _signed(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: object, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]


def test_intermediates_after_the_certificate_are_sent(tmp_path):
    """A client that trusts only the root verifies the leaf through the intermediate we send."""
    root_key, mid_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _signed("Test Root", root_key, "Test Root", root_key, ca=True)
    mid = _signed("Test Intermediate", mid_key, "Test Root", root_key, ca=True)
    leaf = _signed("chain.example.test", leaf_key, "Test Intermediate", mid_key, ca=False)
    cert_path = tmp_path / "chain.crt"
    key_path = tmp_path / "chain.key"
    cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, mid)))
    key_path.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    options = server_tls_options(str(tmp_path), str(cert_path), str(key_path), "ignored")
    assert options.extraCertChain == [mid]
    trusted = Certificate.loadPEM(root.public_bytes(serialization.Encoding.PEM))
    server, client = handshake(options, client_tls_options("chain.example.test", True, [trusted]))
    assert server.data == b"hello"
    assert not client.lost
