"""Airflow user accounts with roles, through the FAB auth manager (apache-airflow-providers-fab).

The deployment's people and services log in as their own users, each with one of FAB's built-in
roles: on-call staff read (``Viewer``: no trigger, no clear), data engineers run the migration
(``User``: trigger, clear, backfill), the gap scan's service user ``hdh_gap_scan`` creates backfills
(``User``), and one ``Admin``. ``python -m hdh_migration users sync`` creates the users named, or
sets their role and password again (idempotent); scripts/prod.sh and docker-compose.yml's
airflow-init run it after the database migration. Passwords are kept in a JSON file ``{user:
password}`` (mode 600, the file the CLI's ``--password-file`` reads): a user without one gets a
generated password, written there; nothing is printed.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

# FAB's built-in roles, and who holds each here.
ROLES = {
    "Viewer": "on-call staff: read DAGs, runs, logs and the board; no trigger, no clear",
    "User": "data engineers and the gap scan's service user: trigger, clear and backfill the DAGs",
    "Op": "User, plus connections, pools and variables (not needed: secrets live in the secrets backend)",
    "Admin": "the deployment's administrator: users and roles",
}
AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"
# Users have no mailbox here; FAB requires a unique, well-formed address (a reserved TLD: never delivered).
EMAIL_DOMAIN = "hdh-migration.invalid"


class AccountError(ValueError):
    """A users setting or passwords file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Synced:
    username: str
    role: str
    created: bool
    password_changed: bool

    def as_dict(self) -> dict:
        return {
            "username": self.username,
            "role": self.role,
            "created": self.created,
            "password_changed": self.password_changed,
        }


def parse_users(setting: str) -> dict[str, str]:
    """``name:Role,name:Role`` (the form of HDH_AIRFLOW_USERS) as {name: role}, checked."""
    users: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in setting.split(","))):
        name, _, role = item.partition(":")
        name, role = name.strip(), role.strip()
        if not name or role not in ROLES:
            raise AccountError(
                f"users: {item!r} is not name:Role with Role one of {', '.join(ROLES)} (e.g. oncall:Viewer)"
            )
        if name in users:
            raise AccountError(f"users: {name!r} is named twice")
        users[name] = role
    if not users:
        raise AccountError("users: no user named; give name:Role pairs, e.g. admin:Admin,oncall:Viewer")
    return users


def ensure_passwords(password_file: Path, usernames: list[str]) -> dict[str, str]:
    """The passwords of ``usernames`` from ``password_file``, generating (and writing) the missing ones."""
    with os.fdopen(os.open(password_file, os.O_RDWR | os.O_CREAT, 0o600), "r+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        text = file.read().strip()
        try:
            passwords = json.loads(text or "{}")
        except json.JSONDecodeError as error:
            raise AccountError(f"{password_file} is not a JSON object of user: password ({error.msg})") from None
        if not isinstance(passwords, dict):
            raise AccountError(f"{password_file} is not a JSON object of user: password")
        missing = [name for name in usernames if not passwords.get(name)]
        for name in missing:
            passwords[name] = secrets.token_urlsafe(24)
        if missing:
            file.seek(0)
            file.truncate()
            file.write(json.dumps(passwords, indent=1, sort_keys=True) + "\n")
    os.chmod(password_file, 0o600)
    return {name: passwords[name] for name in usernames}


def sync_users(users: dict[str, str], password_file: Path) -> list[Synced]:
    """Create each user with its role and password, or set them again; FAB's own security manager."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
    from werkzeug.security import check_password_hash

    passwords = ensure_passwords(password_file, list(users))
    synced = []
    with get_application_builder() as appbuilder:
        manager = appbuilder.sm
        for name, role_name in users.items():
            role = manager.find_role(role_name)
            if role is None:
                raise AccountError(
                    f"role {role_name} does not exist: run `airflow db migrate` with the FAB auth manager"
                )
            user = manager.find_user(username=name)
            if user is None:
                user = manager.add_user(
                    username=name,
                    first_name=name,
                    last_name="hdh-migration",
                    email=f"{name}@{EMAIL_DOMAIN}",
                    role=role,
                    password=passwords[name],
                )
                if not user:
                    raise AccountError(f"FAB refused to create user {name} (see the log above)")
                synced.append(Synced(name, role_name, created=True, password_changed=True))
                continue
            if [r.name for r in user.roles] != [role_name]:
                user.roles = [role]
                manager.update_user(user)
            changed = not check_password_hash(user.password or "", passwords[name])
            if changed:
                manager.reset_password(user.id, passwords[name])
            synced.append(Synced(name, role_name, created=False, password_changed=changed))
    return synced
