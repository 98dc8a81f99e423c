"""The defaults that more than one part of taskq relies on, each in one place.

A backend's own knobs (Redis key prefix, AMQP exchange, SQLite busy timeout) are defaults of
that backend and live with it. Imports nothing.
"""

DAY = 86400.0
WEEK = 7 * DAY

BROKER_URL = "sqlite:///taskq.db"
QUEUE = "default"
RESULT_EXPIRES = DAY  # result_expires; also what idempotency keys and revocations last
CHORD_RETENTION = WEEK  # a chord's recorded members and done marker, whatever result_expires is
CHAIN_RETENTION = WEEK  # the stored rest of a long chain, from when it was launched
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# Levels of arrays and objects in a message, arguments and workflow included: well under
# what orjson writes (254) and what Python's recursion reaches, so that no walk of a
# decoded message (tags, elements, a state write) can fail on its depth.
MAX_NESTING = 100
VISIBILITY_TIMEOUT = 3600.0
# Where a plain (not async) function runs: worker_pool, --pool and a task's `pool`.
THREAD_POOL = "thread"
PROCESS_POOL = "process"
POOLS = (THREAD_POOL, PROCESS_POOL)
GC_THRESHOLD = 10_000  # worker_gc_threshold: allocations between young-object collections
POLLING_INTERVAL = 0.2

MAX_RETRIES = 3
RETRY_DELAY = 180.0
RETRY_BACKOFF_MAX = 600.0
