"""The local CA issues what mosquitto and awsiotsdk need: right names, right usages, a verifiable chain."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from edgeloop.local.pki import CertificateAuthority, IssuedCert


def _load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _common_name(cert: x509.Certificate) -> str:
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertificateAuthority:
    return CertificateAuthority.create(tmp_path_factory.mktemp("ca"), "edgeloop-test-ca")


def test_ca_is_self_signed_and_may_sign(ca):
    cert = _load(ca.cert_path)
    assert cert.issuer == cert.subject
    assert _common_name(cert) == "edgeloop-test-ca"
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    cert.verify_directly_issued_by(cert)


def test_client_cert_carries_the_thing_name_and_client_auth(ca, tmp_path):
    issued = ca.issue("line-1-gw", tmp_path)
    assert isinstance(issued, IssuedCert)
    assert issued.common_name == "line-1-gw" and issued.ca_path == ca.cert_path
    cert = _load(issued.cert_path)
    assert _common_name(cert) == "line-1-gw"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)


def test_server_cert_names_localhost_and_loopback_ip(ca, tmp_path):
    issued = ca.issue("edgeloop-broker", tmp_path, server=True)
    cert = _load(issued.cert_path)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages


def test_chain_verifies_against_the_ca_and_not_against_another(ca, tmp_path):
    issued = ca.issue("line-2-gw", tmp_path)
    cert, ca_cert = _load(issued.cert_path), _load(ca.cert_path)
    cert.verify_directly_issued_by(ca_cert)
    same_name = CertificateAuthority.create(tmp_path / "other", "edgeloop-test-ca")
    with pytest.raises(InvalidSignature):
        cert.verify_directly_issued_by(_load(same_name.cert_path))


def test_openssl_accepts_the_server_chain_for_localhost_and_127_0_0_1(ca, tmp_path):
    """A full path validation (what mosquitto's peers do), not only the signature check."""
    issued = ca.issue("edgeloop-broker", tmp_path, server=True)
    store = x509.verification.Store([_load(ca.cert_path)])
    leaf = _load(issued.cert_path)
    for subject in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        verifier = x509.verification.PolicyBuilder().store(store).build_server_verifier(subject)
        chain = verifier.verify(leaf, [])
        assert chain[-1] == _load(ca.cert_path)
    wrong = x509.verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.com"))
    with pytest.raises(x509.verification.VerificationError):
        wrong.verify(leaf, [])


def test_client_cert_is_valid_now_and_names_its_issuer_key(ca, tmp_path):
    issued = ca.issue("line-3-gw", tmp_path)
    cert, ca_cert = _load(issued.cert_path), _load(ca.cert_path)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc < now < cert.not_valid_after_utc
    authority_key = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    subject_key = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert authority_key == subject_key


def test_keys_are_private_and_load_into_an_ssl_context(ca, tmp_path):
    issued = ca.issue("line-4-gw", tmp_path)
    assert stat.S_IMODE(os.stat(issued.key_path).st_mode) == 0o600
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_cert_chain(issued.cert_path, issued.key_path)  # raises if key and cert do not match
    context.load_verify_locations(issued.ca_path)


def test_keys_are_ec_p256(ca, tmp_path):
    issued = ca.issue("line-5-gw", tmp_path)
    key = _load(issued.cert_path).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"


@pytest.mark.parametrize("bad", ["", "a/b", "gw+1", "gw#", "x" * 65, "thing name"])
def test_a_bad_common_name_is_refused_by_name(ca, tmp_path, bad):
    with pytest.raises(ValueError, match="common_name"):
        ca.issue(bad, tmp_path)
