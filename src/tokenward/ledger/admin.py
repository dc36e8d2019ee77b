"""Durable storage for the gateway's administration: virtual keys and the audit log.

Part of the ledger contract (:class:`AdminRecords` is mixed into every transactional backend),
so the admin API and the CLI work on any ledger URL and every gateway replica sharing a ledger
sees a key change at once. Keys are stored by the SHA-256 of the key, never the key; the
backend caches them by a revision counter, so :meth:`AdminRecords.key_by_hash` on the hot path
is one small read (SQLite: one statement) plus a dictionary lookup.
"""

from __future__ import annotations

import abc
import json
import secrets
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tokenward.clock import Clock, utc
from tokenward.errors import ValidationError
from tokenward.ledger.records import AuditEntry, KeyRecord
from tokenward.ledger.rows import page
from tokenward.numbers import plain

__all__ = ["AdminRecords", "KeyIndex"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """Every stored key, by id and by digest."""

    by_id: Mapping[str, KeyRecord] = field(default_factory=dict)
    by_hash: Mapping[str, KeyRecord] = field(default_factory=dict)

    @classmethod
    def of(cls, records: list[KeyRecord]) -> KeyIndex:
        """The index of ``records``."""
        return cls({r.id: r for r in records}, {r.key_sha256: r for r in records})


class AdminRecords(abc.ABC):
    """Virtual keys and the audit log over a backend's primitives."""

    clock: Clock

    @abc.abstractmethod
    def _transaction(self, write: bool = True) -> AbstractContextManager[None]: ...

    def _single_read(self) -> AbstractContextManager[None]:
        """The context for one read statement (a read transaction unless the store's single
        statements are already atomic)."""
        return self._transaction(write=False)

    @abc.abstractmethod
    def _key_index(self) -> KeyIndex:
        """Every stored key (a backend may cache it by revision)."""

    @abc.abstractmethod
    def _store_key(self, record: KeyRecord) -> None:
        """Create or replace a key by id."""

    @abc.abstractmethod
    def _insert_audit(self, entry: AuditEntry) -> AuditEntry:
        """Append an audit entry; returns it numbered."""

    @abc.abstractmethod
    def _query_audit(
        self, since: datetime | None, after: int | None, limit: int | None, project: str | None
    ) -> list[AuditEntry]: ...

    @abc.abstractmethod
    def _keep_secret(self, name: str, candidate: str) -> str:
        """Store ``candidate`` as secret ``name`` unless one is stored; return the stored one
        (called inside a write transaction)."""

    # -- shared secrets --------------------------------------------------------------------------
    def secret(self, name: str) -> str:
        """The secret ``name`` shared by every process on this ledger: made once (32 random
        bytes, URL-safe base64) by whichever process asks first, then read back by all, so every
        gateway worker and replica signs with the same key (the dashboard's session cookies).

        Raises:
            ValidationError: an empty name.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValidationError("a secret needs a non-empty name", field="name")
        with self._transaction():
            return self._keep_secret(name, secrets.token_urlsafe(32))

    # -- keys ----------------------------------------------------------------------------------
    def put_key(self, record: KeyRecord) -> KeyRecord:
        """Create or replace the key ``record.id`` (``created_at`` defaults to now).

        Returns:
            The stored record.

        Raises:
            ValidationError: another key already has this digest.
        """
        if record.created_at is None:
            record = replace(record, created_at=self.clock.now())
        with self._transaction():
            other = self._key_index().by_hash.get(record.key_sha256)
            if other is not None and other.id != record.id:
                raise ValidationError(f"key {other.id!r} already has this digest", field="key_sha256")
            self._store_key(record)
        return record

    def get_key(self, key_id: str) -> KeyRecord | None:
        """The key ``key_id`` in any state, or None."""
        with self._single_read():
            return self._key_index().by_id.get(key_id)

    def key_by_hash(
        self, sha256_hex: str, *, at: datetime | None = None, include_inactive: bool = False
    ) -> KeyRecord | None:
        """The key whose SHA-256 is ``sha256_hex`` (hex, any case), if it is active at ``at``
        (now): not revoked and not expired. With ``include_inactive`` revoked and expired keys
        are returned too (check :meth:`KeyRecord.active`)."""
        with self._single_read():
            record = self._key_index().by_hash.get(sha256_hex.lower())
        if record is None or include_inactive:
            return record
        return record if record.active(utc(at) if at else self.clock.now()) else None

    def keys(self, project: str | None = None) -> list[KeyRecord]:
        """Every key (revoked and expired ones included), optionally of one project, oldest
        first."""
        with self._single_read():
            records = list(self._key_index().by_id.values())
        if project is not None:
            records = [r for r in records if r.project == project]
        return sorted(records, key=lambda r: (r.created_at or _EPOCH, r.id))

    def revoke_key(self, key_id: str, at: datetime | None = None) -> bool:
        """Revoke key ``key_id`` from ``at`` (now); returns whether it changed (False for an
        unknown key or one already revoked)."""
        when = utc(at) if at else self.clock.now()
        with self._transaction():
            record = self._key_index().by_id.get(key_id)
            if record is None or record.revoked_at is not None:
                return False
            self._store_key(replace(record, revoked_at=when))
            return True

    # -- audit -----------------------------------------------------------------------------------
    def audit(
        self,
        actor: str,
        action: str,
        target: str,
        before: Any = None,
        after: Any = None,
        *,
        project: str | None = None,
    ) -> AuditEntry:
        """Append an audit entry stamped with the ledger's clock.

        Args:
            actor: who (an admin key's name, ``cli``...).
            action: what (``budget.put``, ``key.create``, ``key.revoke``, ``adjustment``...).
            target: what it was done to (a budget name, a key id...).
            before / after: JSON-ready states (Decimals and datetimes are written as strings).
            project: the project the change belongs to.

        Raises:
            ValidationError: an empty actor, action or target, or states that are not JSON.
        """
        for name, value in (("actor", actor), ("action", action), ("target", target)):
            if not isinstance(value, str) or not value.strip():
                raise ValidationError(f"an audit entry needs a non-empty {name}", field=name)
        entry = AuditEntry(
            id=0,
            at=self.clock.now(),
            actor=actor,
            action=action,
            target=target,
            before=_json_ready(before, "before"),
            after=_json_ready(after, "after"),
            project=project,
        )
        with self._transaction():
            return self._insert_audit(entry)

    def audit_log(
        self,
        *,
        since: datetime | None = None,
        after: int | None = None,
        limit: int | None = None,
        project: str | None = None,
    ) -> list[AuditEntry]:
        """Audit entries oldest first: at or after ``since``, with an id above ``after``, of one
        ``project`` (entries of no project are left out when one is named), at most ``limit``."""
        after, limit = page(after, limit)
        with self._transaction(write=False):
            return self._query_audit(utc(since) if since else None, after, limit, project)


def _json_ready(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value, sort_keys=True, default=_default))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"audit {what} must be JSON-serialisable: {exc}", field=what) from None


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, datetime):
        return utc(value).isoformat().replace("+00:00", "Z")
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
