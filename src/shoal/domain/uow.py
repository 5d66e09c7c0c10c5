"""The unit of work: a store session, opened read-only or for writing (``store/db.py``'s ``Database.read()``
and ``write()``), inside which use cases run.

Routes open one (``with svc.db.read() as s``) and hand the session to domain functions; they never run a
query themselves. ``Session`` is named here so that code outside the domain can type a session without
importing SQLAlchemy.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

__all__ = ["Session"]
