"""Google's Python Cloud Run client (google-cloud-run, REST transport) against the emulator.

Run by tests/clients_python.rs with RUN_ENDPOINT (the emulator's base URL) and
SANDBOX_IMAGE (an image with /bin/sh) set. Creates a job, runs it, waits for the execution,
reads the execution and its tasks, deletes the job. Exits non-zero with the failed assertion
on any difference; prints one summary line.
"""

import os
import sys
import uuid

from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.cloud.run_v2.services.executions.transports.rest import ExecutionsRestTransport
from google.cloud.run_v2.services.jobs.transports.rest import JobsRestTransport
from google.cloud.run_v2.services.tasks.transports.rest import TasksRestTransport

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1


def main():
    endpoint = os.environ["RUN_ENDPOINT"]
    image = os.environ["SANDBOX_IMAGE"]
    scheme, host = endpoint.split("://", 1)

    def client(cls, transport_cls):
        transport = transport_cls(host=host, url_scheme=scheme, credentials=AnonymousCredentials())
        return cls(transport=transport)

    jobs = client(run_v2.JobsClient, JobsRestTransport)
    executions = client(run_v2.ExecutionsClient, ExecutionsRestTransport)
    tasks = client(run_v2.TasksClient, TasksRestTransport)

    parent = "projects/python-check/locations/us-central1"
    job_id = "py-" + uuid.uuid4().hex[:8]
    job = run_v2.Job(
        labels={"sandbox-harness": "1"},
        template=run_v2.ExecutionTemplate(
            task_count=1,
            template=run_v2.TaskTemplate(
                max_retries=0,
                timeout="60s",
                containers=[
                    run_v2.Container(
                        image=image,
                        command=["sh", "-c"],
                        args=["echo hello from a python-made job"],
                    )
                ],
            ),
        ),
    )
    created = jobs.create_job(parent=parent, job=job, job_id=job_id).result(timeout=60)
    check(created.name == f"{parent}/jobs/{job_id}", f"created {created.name}")
    got = jobs.get_job(name=created.name)
    check(got.template.template.containers[0].image == image, "job get")
    check(any(j.name == created.name for j in jobs.list_jobs(parent=parent)), "job list")

    op = jobs.run_job(name=created.name)
    execution = op.result(timeout=180)
    check(execution.succeeded_count == 1, f"execution succeeded: {execution}")
    fetched = executions.get_execution(name=execution.name)
    check(fetched.name == execution.name and fetched.completion_time, "execution get")
    listed = list(tasks.list_tasks(parent=execution.name))
    check(len(listed) == 1, f"one task: {listed}")
    check(tasks.get_task(name=listed[0].name).name == listed[0].name, "task get")

    jobs.delete_job(name=created.name).result(timeout=60)
    try:
        jobs.get_job(name=created.name)
        check(False, "the job is gone")
    except Exception as e:  # noqa: BLE001 - any NotFound class
        check("404" in str(e) or "NotFound" in type(e).__name__, f"deleted: {e}")
    print(f"run_check ok ({checks} checks)")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - report any failure as one line and exit 1
        print(f"run_check failed after {checks} checks: {type(e).__name__}: {e}", file=sys.stderr)
        raise
