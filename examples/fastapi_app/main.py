"""A FastAPI app whose handler awaits `task.delay()`:  uvicorn main:api

POST /orders            -> 202 {"task_id": ...}
GET  /tasks/{task_id}   -> {"id", "state", "result" | "error"}
"""

from fastapi import FastAPI
from pydantic import BaseModel
from tasks import app, process_order

from taskq.contrib.fastapi import lifespan, task_status

api = FastAPI(lifespan=lifespan(app))


class Order(BaseModel):
    order_id: str
    amount: float


@api.post("/orders", status_code=202)
async def create_order(order: Order) -> dict[str, str]:
    result = await process_order.delay(order.order_id, order.amount)
    return {"task_id": result.id}


@api.get("/tasks/{task_id}")
async def get_task(task_id: str) -> dict[str, object]:
    return await task_status(app, task_id)
