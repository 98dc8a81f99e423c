"""Running one task: an ordered chain of middleware, the same for a worker and for eager runs.

A job (`job.Job`: a delivery that passed the worker's intake, or an eager call) goes through
these, outermost first; each is `async def handle(job, call_next) -> Outcome`:

    log context  (a worker logging JSON) the job its log lines are about
    metrics      (a worker serving /metrics) counts the outcome, observes wait and runtime
    guard        expired or revoked: settled as REVOKED, nothing below runs
    rate limit   (tasks with a rate_limit) waits for its start, its slot lent meanwhile
    settlement   acks early (unless acks_late) before the run; after it: acks, publishes the
                 retry, or dead-letters, as the outcome says
    user         `app.middleware` in the order added (their before_/after_execute hooks too)
    hooks        (tasks whose class overrides them) on_success, on_failure, on_retry, after_return
    workflow     the next step of a chain, a chord's count, link and link_error
    record       STARTED, then the outcome's state in the result store
    retries      an exception becomes RETRY (autoretry, self.retry()) or the final FAILURE
                 (exhausted retries: into the dead letters first)
    replacement  (bound tasks) self.replace(sig): sig published in the task's place
    time limits  soft and hard limits around the call
    call         the function: a coroutine in the event loop, a plain function in a thread

`pipeline.Pipeline` builds each task's chain once, from the middleware that apply to it.
Imports nothing of the worker: eager runs (`execution.eager`) use the same chain.
"""
