"""The Ray integration tier is skipped without ray[default], unless MTM_REQUIRE_RAY=1 (CI)."""

from __future__ import annotations

import pytest

from tests import ray_cluster


def test_without_ray_the_tier_is_skipped_saying_how_to_install_it(monkeypatch):
    monkeypatch.setattr(ray_cluster, "ray_executable", lambda: None)
    monkeypatch.delenv(ray_cluster.REQUIRE_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"needs ray\[default\]"):
        ray_cluster.require_ray()


def test_with_mtm_require_ray_a_missing_ray_fails_instead(monkeypatch):
    monkeypatch.setattr(ray_cluster, "ray_executable", lambda: None)
    monkeypatch.setenv(ray_cluster.REQUIRE_VARIABLE, "1")
    with pytest.raises(pytest.fail.Exception, match="MTM_REQUIRE_RAY=1 but"):
        ray_cluster.require_ray()
