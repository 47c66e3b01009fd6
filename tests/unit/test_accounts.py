"""``users sync``'s inputs: the name:Role setting and the passwords file (the FAB side runs through the
production profile, tests/prod/test_prod_profile.py)."""

from __future__ import annotations

import json
import stat

import pytest

from hdh_migration.accounts import AccountError, ensure_passwords, parse_users
from hdh_migration.cli import main


def test_users_are_name_role_pairs_with_fab_roles():
    assert parse_users(" admin:Admin, oncall:Viewer ,engineer:User,hdh_gap_scan:User,") == {
        "admin": "Admin",
        "oncall": "Viewer",
        "engineer": "User",
        "hdh_gap_scan": "User",
    }
    for bad, says in (
        ("admin:admin", "Role one of Viewer, User, Op, Admin"),
        ("oncall", "is not name:Role"),
        (":Viewer", "is not name:Role"),
        ("a:Viewer,a:User", "'a' is named twice"),
        (" , ", "no user named"),
    ):
        with pytest.raises(AccountError, match=says):
            parse_users(bad)


def test_passwords_are_kept_generated_for_new_users_and_never_world_readable(tmp_path):
    path = tmp_path / "passwords.json"
    path.write_text(json.dumps({"admin": "kept", "someone": "else"}))
    path.chmod(0o644)
    passwords = ensure_passwords(path, ["admin", "oncall"])
    assert passwords["admin"] == "kept" and len(passwords["oncall"]) >= 32
    assert json.loads(path.read_text()) == {"admin": "kept", "someone": "else", "oncall": passwords["oncall"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_passwords(path, ["oncall"]) == {"oncall": passwords["oncall"]}, "generated once"
    path.write_text("[1, 2]")
    with pytest.raises(AccountError, match="not a JSON object"):
        ensure_passwords(path, ["admin"])


def test_a_bad_users_setting_is_one_line_on_stderr_and_exit_2(tmp_path, capsys):
    assert main(["users", "sync", "--users", "oncall:Reader", "--password-file", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("python -m hdh_migration users: users: 'oncall:Reader' is not name:Role")
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "p.json").exists(), "nothing written for a refused setting"
