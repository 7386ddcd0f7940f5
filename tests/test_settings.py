from __future__ import annotations

import logging

import pytest

from pe_ha.errors import ConfigurationError, ValidationError
from pe_ha.masking import MaskingFilter, mask
from tests.conftest import make_settings


def test_reads_environment_with_prefix(tmp_path, monkeypatch):
    for name in ("key", "kh", "tok", "ca"):
        (tmp_path / name).write_text("x-secret-value" if name == "tok" else "x")
    monkeypatch.setenv("PEHA_MASTER", '{"name": "pe.example.com", "address": "10.1.1.1", "port": 2222}')
    monkeypatch.setenv("PEHA_REPLICA", '{"name": "pe2.example.com"}')
    monkeypatch.setenv("PEHA_MANAGED_NODES", '[{"name": "a1.example.com", "user": "ops"}]')
    monkeypatch.setenv("PEHA_SSH_KEY_FILE", str(tmp_path / "key"))
    monkeypatch.setenv("PEHA_SSH_KNOWN_HOSTS_FILE", str(tmp_path / "kh"))
    monkeypatch.setenv("PEHA_RBAC_TOKEN_FILE", str(tmp_path / "tok"))
    monkeypatch.setenv("PEHA_CA_CERT", str(tmp_path / "ca"))
    monkeypatch.setenv("PEHA_SSH_CONNECT_TIMEOUT_S", "3.5")
    from pe_ha.settings import load_settings

    s = load_settings()
    assert s.master.ssh_address == "10.1.1.1" and s.master.port == 2222
    assert s.host("a1.example.com").user == "ops"
    assert s.ssh_connect_timeout_s == 3.5
    s.check_files()


def test_every_field_has_a_description():
    from pe_ha.settings import HostSettings, Settings

    for model in (Settings, HostSettings):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_missing_setting_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("PEHA_MASTER", raising=False)
    from pe_ha.settings import load_settings

    with pytest.raises(ConfigurationError) as info:
        load_settings(_env_file=None)
    assert "PEHA_MASTER" in str(info.value)


def test_invalid_host_in_settings_is_named(tmp_path):
    with pytest.raises(ConfigurationError) as info:
        make_settings(tmp_path, master={"name": "bad host;"})
    assert "PEHA_MASTER" in str(info.value) and "RFC 1123" in str(info.value)


def test_missing_key_file_unreadable_token_and_bad_ca_are_named(tmp_path):
    s = make_settings(tmp_path, ssh_key_file=tmp_path / "nope")
    with pytest.raises(ConfigurationError, match="PEHA_SSH_KEY_FILE"):
        s.check_files()
    s = make_settings(tmp_path, ca_cert=tmp_path)
    with pytest.raises(ConfigurationError, match="PEHA_CA_CERT.*not a file"):
        s.check_files()
    (tmp_path / "empty").write_text("")
    s = make_settings(tmp_path, rbac_token_file=tmp_path / "empty")
    with pytest.raises(ConfigurationError, match="PEHA_RBAC_TOKEN_FILE.*empty"):
        s.rbac_token()


def test_token_is_secret_and_masked(tmp_path, caplog):
    s = make_settings(tmp_path)
    token = s.rbac_token()
    assert "tok-unit" not in repr(token) and "tok-unit" not in repr(s) and "tok-unit" not in str(s.model_dump())
    raw = token.get_secret_value()
    assert mask(f"curl -H 'X-Authentication: {raw}'") == "curl -H 'X-Authentication: ********'"
    logger = logging.getLogger("pe_ha.test-mask")
    logger.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO, logger="pe_ha.test-mask"):
        logger.info("token is %s", raw)
    assert raw not in caplog.text and "********" in caplog.text


def test_inventory_lookup_refuses_unknown_hosts(tmp_path):
    s = make_settings(tmp_path)
    assert s.host("REPLICA.example.com").name == "replica.example.com"
    with pytest.raises(ValidationError, match="not in the inventory"):
        s.host("other.example.com")
    with pytest.raises(ValidationError, match="RFC 1123"):
        s.host("$(id)")


def test_a_ca_file_gone_since_the_start_is_named_by_its_setting(tmp_path):
    from pe_ha.pe_api import PEApi

    settings = make_settings(tmp_path)
    settings.ca_cert.unlink()  # after the settings' own check, as when the file is replaced mid-run
    with pytest.raises(ConfigurationError, match=f"setting PEHA_CA_CERT: {settings.ca_cert} cannot be read"):
        PEApi(settings)
