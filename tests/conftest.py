"""Shared fixtures: the real Debian Xen artifacts and scratch hosts."""
import os
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent


class XenArtifacts:
    """Paths inside the cache that `make fetch-xen` fills."""

    def __init__(self, root):
        self.root = root
        self.xen_gz = root / "boot" / "xen-4.17-amd64.gz"
        self.xen_efi = root / "boot" / "xen-4.17-amd64.efi"
        self.xen_syms = root / "usr" / "lib" / "debug" / "boot" / "xen-syms-4.17-amd64"
        self.include = root / "usr" / "include"
        self.kexec_h = self.include / "xen" / "kexec.h"
        version_file = root / "VERSION"
        self.deb_version = version_file.read_text().strip() if version_file.exists() else None


@pytest.fixture(scope="session")
def xen_artifacts():
    """The real Xen images and headers.  Missing artifacts fail, not skip:
    every test that uses them guards behaviour users rely on."""
    cache = pathlib.Path(os.environ.get("KEXEC_LU_XEN_CACHE", REPO / ".cache" / "xen"))
    art = XenArtifacts(cache / "root")
    missing = [p for p in (art.xen_gz, art.xen_efi, art.xen_syms, art.kexec_h) if not p.exists()]
    if missing:
        pytest.fail("real Xen artifacts missing (%s): run `make fetch-xen`"
                    % ", ".join(str(p) for p in missing))
    return art
