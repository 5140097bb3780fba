"""What the store knows of the tasks webhooks name, read once per batch of deliveries, for
judging what they claim (farmdomain.claims)."""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Engine, select

from farmdomain.claims import TaskFacts
from farmdomain.jobs import JobState
from jobstore.schema import jobs, results
from jobstore.statements import translated_errors


def task_facts(engine: Engine, task_uuids: Collection[str]) -> dict[str, TaskFacts]:
    """The facts of every task of `task_uuids` that has a job, by taskUUID."""
    if not task_uuids:
        return {}
    # one round trip: each job's row comes once per image it has (once with none)
    query = (
        select(
            jobs.c.task_uuid,
            jobs.c.state,
            jobs.c.finished_at,
            jobs.c.number_results,
            jobs.c.request,
            results.c.image_uuid,
        )
        .outerjoin(results, results.c.task_uuid == jobs.c.task_uuid)
        .where(jobs.c.task_uuid.in_(list(task_uuids)))
    )
    # autocommitted, as the result statement that follows is: a pooled connection then
    # keeps one isolation level, and the read needs no BEGIN or ROLLBACK round trips
    with (
        translated_errors(),
        engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn,
    ):
        rows = conn.execute(query).all()
    known: dict[str, set[str]] = {}
    for row in rows:
        images = known.setdefault(row.task_uuid, set())
        if row.image_uuid is not None:
            images.add(row.image_uuid)
    return {
        row.task_uuid: TaskFacts(
            state=JobState(row.state),
            finished_at=row.finished_at,
            number_results=row.number_results,
            request=row.request,
            known_images=frozenset(known[row.task_uuid]),
        )
        for row in rows
    }
