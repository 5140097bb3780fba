"""Row triggers on `jobs` that the migrations create, written once for both dialects.

The store keeps some of its bookkeeping in the database itself (the callback outbox, the
Runware capacity count), so that it commits or rolls back with the job's transition
whichever code path made it. A trigger here is never changed once a migration uses it: a
new behaviour is a new trigger in a new migration.
"""

from __future__ import annotations

from alembic import op

TERMINAL = "('succeeded', 'failed', 'canceled')"


def terminal_transition(guard: str) -> str:
    """The WHEN of a trigger that fires on a job's move into a terminal state, if `guard`."""
    return f"{guard} AND NEW.state IN {TERMINAL} AND OLD.state NOT IN {TERMINAL}"


def create_state_trigger(trigger: str, function: str, when: str, body: str) -> None:
    """AFTER UPDATE OF state ON jobs, per row, running `body` (one SQL statement) `when`;
    PostgreSQL runs it from `function`, SQLite inline."""
    create_column_trigger("state", trigger, function, when, body)


def create_column_trigger(column: str, trigger: str, function: str, when: str, body: str) -> None:
    """AFTER UPDATE OF `column` ON jobs, per row, running `body` (one SQL statement) `when`;
    PostgreSQL runs it from `function`, SQLite inline."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"""CREATE FUNCTION {function}() RETURNS trigger
  LANGUAGE plpgsql AS $$ BEGIN {body}; RETURN NULL; END $$"""
        )
        op.execute(
            f"""CREATE TRIGGER {trigger} AFTER UPDATE OF {column} ON jobs
  FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION {function}()"""
        )
    else:
        op.execute(
            f"""CREATE TRIGGER {trigger} AFTER UPDATE OF {column} ON jobs
  FOR EACH ROW WHEN {when} BEGIN {body}; END"""
        )


def drop_state_trigger(trigger: str, function: str) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP TRIGGER {trigger} ON jobs")
        op.execute(f"DROP FUNCTION {function}()")
    else:
        op.execute(f"DROP TRIGGER {trigger}")
