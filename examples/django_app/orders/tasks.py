"""The orders' tasks: plain functions, which the worker runs in threads, where Django's ORM
works as in a view."""

from proj.taskq_app import app

from orders.models import Order


@app.task
def confirm_order(order_id: int) -> dict[str, object]:
    order = Order.objects.get(pk=order_id)  # committed before the task was published
    order.status = "confirmed"
    order.save(update_fields=["status"])
    return {"order_id": order.pk, "status": order.status}
