"""A throwaway certificate authority for the local broker's mutual TLS.

AWS IoT Core issues one X.509 certificate per thing; locally this CA does, with the thing name as
the common name, so mosquitto's `use_identity_as_username` can confine each gateway to its topics.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Thing names in AWS IoT are [a-zA-Z0-9:_-]+; a dot is allowed for server names. No MQTT
# wildcards or slashes: the CN becomes the broker username inside topic patterns.
_COMMON_NAME = re.compile(r"^[A-Za-z0-9:_.-]{1,64}$")
VALIDITY = dt.timedelta(days=30)
CLOCK_SKEW = dt.timedelta(minutes=5)
SERVER_DNS_NAMES = ("localhost",)
SERVER_IP_ADDRESSES = ("127.0.0.1",)


@dataclass(frozen=True)
class IssuedCert:
    """PEM files of one identity, plus the CA that signed it (what an mTLS client needs)."""

    cert_path: Path
    key_path: Path
    ca_path: Path
    common_name: str


def _check_common_name(common_name: str) -> str:
    if not isinstance(common_name, str) or not _COMMON_NAME.match(common_name):
        raise ValueError(f"common_name {common_name!r} is not valid: use 1-64 characters from A-Z a-z 0-9 : _ . -")
    return common_name


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgeloop local"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, *, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    """A certificate for `key`, valid from a little before now (clock skew) for VALIDITY."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + VALIDITY)
    )


class CertificateAuthority:
    """A self-signed EC P-256 CA whose certificate and key live in `directory`."""

    def __init__(self, directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        self.directory = directory
        self.name = name
        self.certificate = cert
        self._key = key

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def key_path(self) -> Path:
        return self.directory / "ca.key"

    @classmethod
    def create(cls, directory: Path, name: str) -> CertificateAuthority:
        _check_common_name(name)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key = _new_key()
        cert = (
            _builder(_name(name), issuer=_name(name), key=key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        authority = cls(directory, name, cert, key)
        authority.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(authority.key_path, _key_pem(key))
        return authority

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA `create` wrote to `directory` (what `edgeloop local gateway add` signs with)."""
        directory = Path(directory)
        cert_path, key_path = directory / "ca.crt", directory / "ca.key"
        for path in (cert_path, key_path):
            if not path.is_file():
                raise FileNotFoundError(f"CA file {path} does not exist: is this the folder of a local CA?")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
            raise ValueError(f"CA key {key_path} does not belong to the CA certificate {cert_path}")
        common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = str(common_names[0].value) if common_names else directory.name
        return cls(directory, name, cert, key)

    def issue(self, common_name: str, directory: Path, server: bool = False) -> IssuedCert:
        """Sign a new key for `common_name`: a server cert (SANs localhost, 127.0.0.1) or a client cert."""
        _check_common_name(common_name)
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key = _new_key()
        builder = (
            _builder(_name(common_name), issuer=self.certificate.subject, key=key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName(n) for n in SERVER_DNS_NAMES]
                    + [x509.IPAddress(ipaddress.ip_address(a)) for a in SERVER_IP_ADDRESSES]
                ),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = IssuedCert(
            cert_path=directory / f"{common_name}.crt",
            key_path=directory / f"{common_name}.key",
            ca_path=self.cert_path,
            common_name=common_name,
        )
        issued.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(issued.key_path, _key_pem(key))
        return issued
