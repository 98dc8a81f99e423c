"""Tasks of the FastAPI example. Worker:  taskq worker -A tasks:app"""

import anyio

from taskq import TaskQ

app = TaskQ("orders")


@app.task(acks_late=True)
async def process_order(order_id: str, amount: float) -> dict[str, object]:
    await anyio.sleep(0.1)  # stands in for the payment provider
    return {"order_id": order_id, "charged": amount, "status": "paid"}
