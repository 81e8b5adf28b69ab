"""Configuration: one TOML file, validated at once, every problem named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cratesense.daemon.config import describe, load
from cratesense.errors import ConfigError


def test_missing_file_means_defaults(tmp_path):
    config = load(tmp_path / "absent.toml")
    assert config.analysis.bpm_range == (70.0, 180.0)
    assert config.sync.catalog_url == "" and config.sync.contribute is True
    assert config.workers >= 1 and config.music_folders
    assert set(config.sources.values()) == {"default"}


def test_file_values_and_flag_overrides_with_sources(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[library]\nfolders = ["~/Crates", "/mnt/dj"]\n[analysis]\nbpm_range = [60, 170]\n')
    config = load(path, overrides={"sync.contribute": False})
    assert config.library.folders[1] == "/mnt/dj" and not config.library.folders[0].startswith("~")
    assert config.analysis.bpm_range == (60.0, 170.0)
    assert config.sync.contribute is False
    assert config.sources["analysis.bpm_range"] == "file"
    assert config.sources["sync.contribute"] == "flag"
    assert config.sources["sync.interval_minutes"] == "default"
    with pytest.raises(AttributeError):
        config.sync.contribute = True  # frozen


def test_every_problem_is_reported_at_once_with_did_you_mean(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        "[library]\nfolder = ['/music']\n"
        "[analysis]\nworkers = -2\nbpm_range = [180, 70]\n"
        "[sync]\ncontribute = 'yes'\n"
        "[synk]\n"
    )
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert "5 problem(s)" in message
    assert "library.folder: unknown key (did you mean 'folders'?)" in message
    assert "analysis.workers: expected a whole number" in message
    assert "analysis.bpm_range: expected [low, high]" in message
    assert "sync.contribute: expected true or false" in message
    assert "[synk]: unknown section (did you mean 'sync'?)" in message


def test_invalid_toml_is_one_clear_error(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[library\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(path)


def test_config_command_prints_values_and_sources(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[sync]\ninterval_minutes = 5\n")
    result = subprocess.run(
        [sys.executable, "-m", "cratesense", "config", "--config", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "sync.interval_minutes = 5.0  # file" in result.stdout
    assert "analysis.bpm_range = [70.0, 180.0]  # default" in result.stdout
    assert len(describe(load(path))) == result.stdout.count("# ") - 1
    path.write_text("[sync]\nintervl_minutes = 5\n")
    bad = subprocess.run(
        [sys.executable, "-m", "cratesense", "config", "--config", str(path)], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "did you mean 'interval_minutes'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_readme_example_is_a_valid_config(tmp_path):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)
    path = tmp_path / "config.toml"
    path.write_text(example)
    config = load(path)
    assert config.sources["library.folders"] == "file" and len(config.library.folders) == 2
