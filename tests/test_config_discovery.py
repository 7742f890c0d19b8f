"""Config paths: directories are discovered as documented (sorted, dot-files skipped, each
file once), a missing path or an empty directory is an error, and `ratelimitd check` prints one
`file:line: message` per error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ratelimitd.cli import main
from ratelimitd.config.errors import ConfigError, InvalidConfigError
from ratelimitd.config.loader import check_paths, load_config
from tests.config_files import assert_error, domain_file, write

# -- discovery -----------------------------------------------------------------------------


def test_directory_recurses_in_sorted_order(tmp_path: Path) -> None:
    # Created out of order so that creation order cannot pass for sorted order.
    for relative in ["x/y/deep.yaml", "m.yml", "x/b.yaml", "a.yaml"]:
        write(tmp_path, relative, domain_file(Path(relative).stem))
    config = load_config([tmp_path])
    assert config.files == tuple(
        str(tmp_path / relative) for relative in ["a.yaml", "m.yml", "x/b.yaml", "x/y/deep.yaml"]
    )
    assert [rule.domain for rule in config.rules] == ["a", "m", "b", "deep"]


def test_directory_order_is_by_relative_path(tmp_path: Path) -> None:
    write(tmp_path / "conf", "b.yaml", domain_file("b"))
    write(tmp_path / "conf" / "a", "z.yaml", domain_file("a_z"))
    config = load_config([tmp_path / "conf"])
    assert list(config.domains) == ["a_z", "b"]


def test_directory_skips_dot_files_dot_dirs_and_non_yaml(tmp_path: Path) -> None:
    write(tmp_path, "real.yaml", domain_file("real"))
    write(tmp_path, ".hidden.yaml", "this: is: not: valid")
    write(tmp_path, ".git/config.yaml", "garbage: [")
    write(tmp_path, "sub/.swap.yaml", "garbage: [")
    write(tmp_path, "notes.txt", "garbage: [")
    write(tmp_path, "real.yaml.bak", "garbage: [")
    write(tmp_path, "sub/inner.yml", domain_file("inner"))
    config = load_config([tmp_path])
    assert config.files == (str(tmp_path / "real.yaml"), str(tmp_path / "sub/inner.yml"))
    assert set(config.domains) == {"real", "inner"}


def test_kubernetes_configmap_mount_loads_each_domain_once(tmp_path: Path) -> None:
    mount = tmp_path / "config"
    data = mount / "..2024_01_01"
    write(data, "a.yaml", domain_file("alpha"))
    write(data, "b.yaml", domain_file("beta"))
    os.symlink("..2024_01_01", mount / "..data")
    os.symlink("..data/a.yaml", mount / "a.yaml")
    os.symlink("..data/b.yaml", mount / "b.yaml")
    config = load_config([mount])
    assert sorted(config.domains) == ["alpha", "beta"]
    assert [rule.domain for rule in config.rules] == ["alpha", "beta"]
    assert config.files == (str(mount / "a.yaml"), str(mount / "b.yaml"))
    assert check_paths([mount]) == []


def test_a_file_given_twice_is_loaded_once(tmp_path: Path) -> None:
    path = write(tmp_path, "a.yaml", domain_file("alpha"))
    alias = tmp_path / "sub" / ".." / "a.yaml"
    (tmp_path / "sub").mkdir()
    config = load_config([path, tmp_path, alias, str(path)])
    assert config.files == (str(path),)
    assert [rule.domain for rule in config.rules] == ["alpha"]


def test_a_symlink_and_its_target_load_once(tmp_path: Path) -> None:
    target = write(tmp_path, "real/a.yaml", domain_file("alpha"))
    link = tmp_path / "link.yaml"
    os.symlink(target, link)
    config = load_config([link, target])
    assert config.files == (str(link),)
    assert list(config.domains) == ["alpha"]


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    errors = check_paths([missing])
    assert len(errors) == 1, errors
    assert_error(errors[0], missing, None, "no such file or directory")
    with pytest.raises(InvalidConfigError, match="no such file"):
        load_config([missing])


def test_empty_directory(tmp_path: Path) -> None:
    write(tmp_path, "README.txt", "not yaml")
    with pytest.raises(InvalidConfigError) as raised:
        load_config([tmp_path])
    assert raised.value.errors == (ConfigError(str(tmp_path), None, "no config files"),)


# -- `ratelimitd check` --------------------------------------------------------------------


def test_check_command_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "ok.yaml", domain_file("fine"))
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"ok: {path}"]


def test_check_command_reports_every_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = """
        domain: d
        descriptors:
          - key: a
            rate_limit: {unit: minutes, requests_per_units: 1}
          - key: a
    """
    path = write(tmp_path, "bad.yaml", text)
    good = write(tmp_path, "good.yaml", domain_file("fine"))
    assert main(["check", str(good), str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{path}:4: unknown key 'requests_per_units'")
    assert lines[1].startswith(f"{path}:4: unknown unit 'minutes'")
    assert lines[2].startswith(f"{path}:5: duplicate descriptor a")
    assert not any(line.startswith("ok:") for line in lines)


def test_check_command_missing_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert main(["check", str(missing)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{missing}: no such file or directory"]
