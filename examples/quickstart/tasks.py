"""The quickstart tasks. Run a worker for them with:  taskq worker -A tasks:app -Q default,images"""

import anyio

from taskq import TaskQ

app = TaskQ("quickstart")  # no URL: the embedded SQLite database ./taskq.db


@app.task
async def add(x: int, y: int) -> int:
    return x + y


@app.task
async def fetch(url: str) -> dict[str, object]:
    await anyio.sleep(0.05)  # stands in for an HTTP call
    return {"url": url, "status": 200}


@app.task(name="quickstart.resize", queue="images")
def resize(path: str, size: int) -> str:
    """A plain function: the worker runs it in a thread."""
    return f"{path} resized to {size}px"


@app.task(bind=True)
async def whoami(self) -> str:  # type: ignore[no-untyped-def]
    return f"task {self.request.id} on {self.request.hostname}"


@app.task
async def divide(x: float, y: float) -> float:
    return x / y


@app.task
async def mul(x: int, y: int) -> int:
    return x * y


@app.task
def tsum(values: list[int]) -> int:
    return sum(values)


@app.task
async def summarize(value: int, label: str) -> str:
    return f"{label} {value}"
