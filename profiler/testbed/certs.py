"""A throwaway CA and one certificate per sidecar, made with ``openssl`` in the state dir."""

from __future__ import annotations

from pathlib import Path

from profiler.testbed.netns import run

_DAYS = "2"


def make_ca(out: Path) -> tuple[Path, Path]:
    key, crt = out / "ca.key", out / "ca.crt"
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
    run(["openssl", "req", "-x509", "-new", "-key", str(key), "-out", str(crt), "-days", _DAYS,
         "-subj", "/O=smp-profiler testbed/CN=smp-testbed-ca"])  # fmt: skip
    return key, crt


def make_leaf(out: Path, ca: tuple[Path, Path], pod: str, trust_domain: str) -> dict[str, str]:
    """A SPIFFE-style identity (spiffe://<trust_domain>/ns/default/sa/<pod>) signed by ``ca``;
    PEM strings for Envoy: ``ca``, ``cert``, ``key``."""
    key, csr, crt, ext = (out / f"{pod}.{s}" for s in ("key", "csr", "crt", "ext"))
    spiffe = f"spiffe://{trust_domain}/ns/default/sa/{pod}"
    ext.write_text(
        f"subjectAltName=URI:{spiffe},DNS:{pod}\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key)])
    run(["openssl", "req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={pod}"])
    run(["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]),
         "-CAcreateserial", "-out", str(crt), "-days", _DAYS, "-extfile", str(ext)])  # fmt: skip
    return {"ca": ca[1].read_text(), "cert": crt.read_text(), "key": key.read_text()}
