"""The guard refuses any target that is not provably a French sovereign host, and says why."""

from __future__ import annotations

import pytest

from hdh_migration.errors import SovereigntyError
from hdh_migration.target import PROFILES, MiB, SovereignTarget, TransferSettings, check_sovereign_endpoint


@pytest.mark.parametrize(
    ("endpoint", "profile"),
    [
        ("https://s3.fr-par.scw.cloud", "scaleway"),
        ("https://s3.gra.io.cloud.ovh.net", "ovhcloud"),
        ("https://hdh.s3.fr1.cloud-temple.com", "cloud_temple"),
        ("https://oos.cloudgouv-eu-west-1.outscale.com", "outscale_secnumcloud"),
        ("https://objectstorage.eu-west-2.numspot.com", "numspot"),
        ("http://127.0.0.1:8333", "generic"),
        ("http://localhost:8333", "generic"),
        ("http://[::1]:8333", "generic"),
        ("http://seaweedfs:8333", "standin"),
    ],
)
def test_sovereign_and_loopback_targets_are_allowed(endpoint, profile):
    assert check_sovereign_endpoint(endpoint, profile).name == profile


@pytest.mark.parametrize(
    ("endpoint", "profile", "reason"),
    [
        ("https://s3.eu-west-3.amazonaws.com", "generic", "non-sovereign pattern *.amazonaws.com"),
        ("https://hdh.blob.core.windows.net", "generic", "non-sovereign pattern *.blob.core.windows.net"),
        ("https://storage.googleapis.com", "generic", "non-sovereign pattern *.googleapis.com"),
        ("https://acct.r2.cloudflarestorage.com", "generic", "non-sovereign pattern"),
        ("http://s3.fr-par.scw.cloud", "scaleway", "only https is allowed outside loopback"),
        ("https://minio.example.org", "generic", "is not on the sovereign allow-list"),
        ("https://s3.fr-par.scw.cloud", "ovhcloud", "does not belong to profile 'ovhcloud'"),
        ("http://seaweedfs:8333", "generic", "only https is allowed outside loopback"),
        (None, "generic", "no 'endpoint_url'"),
        ("https://s3.fr-par.scw.cloud", "aws", "profile 'aws' is unknown"),
    ],
)
def test_refusals_say_why(endpoint, profile, reason):
    with pytest.raises(SovereigntyError) as excinfo:
        check_sovereign_endpoint(endpoint, profile)
    assert reason in str(excinfo.value)


def test_scaleway_part_size_grows_to_fit_1000_parts():
    target = SovereignTarget.__new__(SovereignTarget)  # part sizing needs no connection
    target.profile = PROFILES["scaleway"]
    target.settings = TransferSettings(part_size=16 * MiB)
    assert target.part_size_for(1 << 30) == 16 * MiB
    big = 100 << 30  # 100 GiB would need 6,400 parts of 16 MiB
    assert target.part_size_for(big) * 1000 >= big
    assert target.part_size_for(big) % MiB == 0
