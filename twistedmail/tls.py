"""
Certificates and TLS settings for every listener and for outgoing SMTP.

A server needs a certificate before its first STARTTLS.  When the operator
configures none, we make a self-signed one for the hostname once, keep it in
``DATA_DIR/tls/`` and reuse it, so that restarts do not change the key that
clients may have pinned; it is made again only when it no longer fits (the
hostname changed, it expires soon, or the file was damaged).

Outgoing SMTP uses opportunistic TLS without verification (RFC 7435 §3:
an unverifiable certificate must not stop delivery that would otherwise go
in plaintext), and verified TLS only where a route asks for it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    TLSVersion,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from zope.interface import implementer

from twistedmail.config import ConfigError

__all__ = [
    "CertificateError",
    "client_tls_options",
    "self_signed_paths",
    "server_tls_options",
]

log = Logger()

TLS_DIR = "tls"
SELF_SIGNED_PEM = "selfsigned.pem"
"""Private key and certificate together (mode 0600): one file, one atomic rename."""
SELF_SIGNED_CRT = "selfsigned.crt"
"""The certificate alone, for clients to trust (e.g. ``swaks --tls-ca-path``)."""

_VALIDITY = datetime.timedelta(days=5 * 365)
_RENEW_BEFORE = datetime.timedelta(days=30)


_TLSKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)
"""Private keys that can sign a TLS handshake (and that pyOpenSSL takes)."""


class CertificateError(ConfigError):
    """A certificate or key cannot be used; the text names the file."""


def self_signed_paths(data_dir: str) -> tuple[str, str]:
    """Where the generated key+certificate and the certificate alone are kept."""
    directory = os.path.join(data_dir, TLS_DIR)
    return os.path.join(directory, SELF_SIGNED_PEM), os.path.join(directory, SELF_SIGNED_CRT)


# --- Server side ------------------------------------------------------------------


def server_tls_options(
    data_dir: str, certificate: str | None, private_key: str | None, hostname: str
) -> CertificateOptions:
    """
    The TLS settings every listener (STARTTLS and implicit TLS) presents.

    :param certificate: a PEM file with the certificate, then any
        intermediates; None to use (and if need be make) the self-signed one.
    :param private_key: a PEM file with its unencrypted key; None when the
        key is in the certificate file.
    :raises CertificateError: a file is unreadable, holds no usable
        certificate or key, or the key does not match the certificate.
    """
    if certificate is None:
        certificate = private_key = _ensure_self_signed(data_dir, hostname)
    key_path = private_key or certificate
    chain = _load_certificates(certificate)
    key = _load_private_key(key_path)
    if chain[0].public_key() != key.public_key():
        raise CertificateError(
            f"the private key in {key_path} does not belong to the certificate in {certificate}"
        )
    # cryptography objects, not pyOpenSSL's X509/PKey: CertificateOptions
    # hands them unchanged to SSL.Context.use_certificate, use_privatekey and
    # add_extra_chain_cert, which take both and deprecate the pyOpenSSL
    # types.  Twisted's annotations still name only the old types.
    options = CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]
        certificate=chain[0],  # type: ignore[arg-type]
        extraCertChain=chain[1:],  # type: ignore[arg-type]
        raiseMinimumTo=TLSVersion.TLSv1_2,  # Twisted's default today; RFC 8996 forbids older
    )
    try:
        options.getContext()  # fail now, at startup, not at the first handshake
    except SSL.Error as e:
        raise CertificateError(f"cannot use {certificate} with {key_path}: {e}") from None
    return options


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CertificateError(f"cannot read {path}: {e.strerror or e}") from None


def _load_certificates(path: str) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(_read(path))
    except ValueError:
        chain = []
    if not chain:
        raise CertificateError(f"{path} holds no PEM certificate")
    return chain


def _load_private_key(path: str) -> _TLSKey:
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(
            f"the private key in {path} is encrypted; give it unencrypted"
        ) from None
    except ValueError:
        raise CertificateError(f"{path} holds no usable PEM private key") from None
    if not isinstance(key, _TLSKey):  # e.g. an X25519 (key exchange only) key
        raise CertificateError(f"the private key in {path} cannot sign a TLS handshake")
    return key


# --- The self-signed certificate -------------------------------------------------------


def _ensure_self_signed(data_dir: str, hostname: str) -> str:
    """The path of a usable self-signed key+certificate for ``hostname``, made if need be."""
    pem_path, crt_path = self_signed_paths(data_dir)
    reason = _unusable_reason(pem_path, hostname)
    if reason is None:
        return pem_path
    log.info(
        "Generating a self-signed TLS certificate for {hostname} in {path} ({reason})",
        hostname=hostname,
        path=pem_path,
        reason=reason,
    )
    key, cert = _generate(hostname)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    try:
        os.makedirs(os.path.dirname(pem_path), mode=0o700, exist_ok=True)
        # One file for key and certificate, renamed into place: two daemons
        # starting together can never pair one's key with the other's cert.
        _write_atomically(pem_path, key_pem + cert_pem, 0o600)
        _write_atomically(crt_path, cert_pem, 0o644)
    except OSError as e:
        raise CertificateError(
            f"cannot write a self-signed certificate to {pem_path}: {e.strerror or e}"
        ) from None
    return pem_path


def _unusable_reason(pem_path: str, hostname: str) -> str | None:
    """Why the existing self-signed file cannot be reused, or None if it can."""
    if not os.path.exists(pem_path):
        return "none yet"
    try:
        data = _read(pem_path)
        cert = x509.load_pem_x509_certificates(data)[0]
        key = serialization.load_pem_private_key(data, password=None)
    except (CertificateError, ValueError, TypeError, IndexError):
        return "the existing one is unreadable"
    if cert.public_key() != key.public_key():
        return "the existing key and certificate do not match"
    if cert.not_valid_after_utc - _now() < _RENEW_BEFORE:
        return "the existing one expires soon"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "the existing one names no host"
    if _general_name(hostname) not in names:
        return "the existing one is for another host name"
    return None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _general_name(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname.lower())


def _generate(hostname: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    # P-256: every TLS stack since ~2010 speaks it, and it is made in a millisecond.
    key = ec.generate_private_key(ec.SECP256R1())
    # Loopback names too, so local clients and tests can verify against it.
    names: list[x509.GeneralName] = [_general_name(hostname)]
    for extra in ("localhost", "127.0.0.1", "::1"):
        name = _general_name(extra)
        if name not in names:
            names.append(name)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64])])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)  # mkstemp makes it 0600; the key never exists wider
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


# --- Client side ----------------------------------------------------------------------


@implementer(IOpenSSLClientConnectionCreator)
class _OpportunisticTLS:
    """Encrypt, send SNI, accept any certificate (RFC 7435 §3)."""

    def __init__(self, hostname: str) -> None:
        self._options = CertificateOptions()  # verify=False is its default
        if isIPAddress(hostname) or isIPv6Address(hostname):
            self._server_name: bytes | None = None  # RFC 6066 §3: no SNI for literals
        else:
            try:
                self._server_name = hostname.encode("idna")
            except UnicodeError:
                self._server_name = None  # a name DNS cannot carry gets no SNI either

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def client_tls_options(
    hostname: str, verify: bool, trust_roots: Sequence[Certificate] = ()
) -> IOpenSSLClientConnectionCreator:
    """
    TLS settings for an outgoing connection to ``hostname``.

    :param verify: False for opportunistic STARTTLS, which encrypts against
        passive eavesdropping and accepts any certificate; True when the
        route requires TLS (smart host with ``relay_require_tls``): the chain
        must verify and name ``hostname``.
    :param trust_roots: certificates to trust instead of the system's CAs
        when verifying (a private CA, or a peer's self-signed certificate).

    Every call makes a new OpenSSL context.  The queue runner does not call
    this per session: ``twistedmail.outbound.tlscache.TLSOptionsCache``
    shares one context for opportunistic TLS itself and calls this only for
    verified TLS, once per host name; so ``verify=False`` here serves
    one-off senders and tests.
    """
    if not verify:
        return _OpportunisticTLS(hostname)
    if not trust_roots:
        return optionsForClientTLS(hostname)
    roots = trustRootFromCertificates(list(trust_roots))  # type: ignore[no-untyped-call]
    return optionsForClientTLS(hostname, trustRoot=roots)
