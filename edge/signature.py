"""Model signatures: who validated a model, checked on the cart before the model is read.

A signature is OpenSSF model-signing's own bundle (an in-toto statement of the file's SHA-256 in a DSSE
envelope, signed with a local elliptic-curve key; no transparency log, no network), written beside the model as
``NAME.tflite.sig``, so that ``model_signing verify key`` checks it too. A key is named by its fingerprint,
``sha256:`` and the SHA-256 of its PEM public key: the hint model-signing writes into every signature, which is
how a model signed by a key the cart does not trust is told from one altered after signing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelError

SUFFIX = ".sig"
CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model-signing signs with
CASES = ("unsigned", "unknown key", "altered", "bad signature")


class Untrusted(ModelError):
    """A model refused under ``trust``; ``case`` is one of CASES."""

    def __init__(self, file: str | None, case: str, problem: str):
        self.case = case
        super().__init__(file, problem)


@dataclass(frozen=True)
class Key:
    """A trusted public key: its file, and the fingerprint signatures name it by."""

    path: str
    fingerprint: str


def signature_path(model: str | os.PathLike) -> Path:
    return Path(os.fspath(model) + SUFFIX)


def fingerprint(public_key) -> str:
    """A public key's name in signatures: the SHA-256 of its PEM form, as model-signing hints it."""
    from cryptography.hazmat.primitives import serialization

    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(pem).hexdigest()


def public_key(path: str | os.PathLike) -> Key:
    """A trusted key from its PEM file; ValueError saying what is wrong with the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        hint = " (this is a private key: give the cart the public one)" if b"PRIVATE KEY" in data else ""
        raise ValueError(f"{path}: not a PEM public key{hint}") from None
    _check_curve(key, path, ec)
    return Key(os.fspath(path), fingerprint(key))


def signing_key(path: str | os.PathLike) -> str:
    """Check a PEM private key that signs models (elliptic curve, no password); its public key's fingerprint."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ValueError(f"{path}: the private key is protected by a password, which medlite cannot ask for; "
                         "sign with a key file without one, kept where only the signer can read it") from None
    except ValueError:
        raise ValueError(f"{path}: not a PEM private key") from None
    _check_curve(key, path, ec)
    return fingerprint(key.public_key())


def sign(model: str | os.PathLike, key: str | os.PathLike) -> str:
    """Sign a model file with a private key: writes ``model.sig``; returns the key's fingerprint."""
    import model_signing

    fp = signing_key(key)
    model_signing.signing.Config().use_elliptic_key_signer(private_key=key).sign(model, signature_path(model))
    return fp


def signed_by(model: str | os.PathLike) -> str | None:
    """The fingerprint a model's signature names, unverified (for ``medlite env``); None when unsigned.
    ValueError when the signature file cannot be read."""
    sig = signature_path(model)
    return _bundle(sig.read_bytes())[0] if sig.is_file() else None


def verify(model: str | os.PathLike, data: bytes, keys: list[Key]) -> Key:
    """The trusted key that signed ``model``, whose bytes (read before) are ``data``; Untrusted otherwise."""
    import model_signing
    from cryptography.exceptions import InvalidSignature

    path, sig = os.fspath(model), signature_path(model)
    if not sig.is_file():
        raise Untrusted(path, "unsigned", f"is not signed (no {sig.name} beside it), and this run trusts only "
                                          "signed models; sign it with `medlite sign` or `medlite convert "
                                          "--sign-key`")
    raw = sig.read_bytes()  # read once: what is checked below is what was read here
    try:
        named, digest = _bundle(raw)
    except ValueError as e:
        raise Untrusted(path, "bad signature", f"its signature {sig.name} cannot be read ({e}); sign the model "
                                               "again") from None
    key = next((k for k in keys if k.fingerprint == named), None)
    if key is None:
        raise Untrusted(path, "unknown key", f"is signed by key {named}, which this run does not trust (it trusts "
                                             f"{', '.join(k.fingerprint for k in keys)})")
    try:
        with tempfile.TemporaryDirectory(prefix="medlite-sig-") as tmp:
            copy = Path(tmp) / sig.name
            copy.write_bytes(raw)
            model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key.path).verify(path, copy)
    except InvalidSignature:
        raise Untrusted(path, "bad signature", f"its signature {sig.name} names trusted key {key.fingerprint} "
                                               "but does not verify with it: the signature was altered") from None
    except ValueError as e:
        if "mismatch" not in str(e).lower():
            raise Untrusted(path, "bad signature", f"its signature {sig.name} does not verify ({e})") from None
        raise Untrusted(path, "altered", f"was altered after it was signed by trusted key {key.fingerprint}: its "
                                         "bytes are not the ones signed; re-copy the model") from None
    # model-signing hashed the file on disk; the bytes that will run are the ones read before, so they are held
    # to the signed digest too (the statement is authenticated by now).
    if hashlib.sha256(data).hexdigest() != digest:
        raise Untrusted(path, "altered", "changed while its signature was being checked; load it again")
    return key


def _bundle(raw: bytes) -> tuple[str, str]:
    """(the signing key's fingerprint, the model's signed SHA-256) named in a signature file's bytes, unverified."""
    try:
        bundle = json.loads(raw.decode("utf-8"))
        hint = bundle["verificationMaterial"]["publicKey"]["hint"]
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
        (resource,) = statement["predicate"]["resources"]  # one file signed
        return "sha256:" + str(hint), str(resource["digest"])
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a model-signing signature of one file with a key: {type(e).__name__}") from None


def _read(path: str | os.PathLike) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None


def _check_curve(key, path, ec) -> None:
    if not isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)) or key.curve.name not in CURVES:
        raise ValueError(f"{path}: not an elliptic-curve key on {', '.join(CURVES)}, which model-signing signs "
                         "with (make one: openssl ecparam -name prime256v1 -genkey -noout -out private.pem)")
