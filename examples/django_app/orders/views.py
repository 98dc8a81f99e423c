"""POST /orders creates an order and, once the transaction commits, publishes its
confirmation; GET /orders/<id> shows it."""

import json
import uuid

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from orders.models import Order
from orders.tasks import confirm_order

BAD_BODY = 'expected a JSON body {"item": "...", "quantity": 1 or more}'


@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body)
    except ValueError:
        body = None
    item = body.get("item") if isinstance(body, dict) else None
    quantity = body.get("quantity") if isinstance(body, dict) else None
    if not isinstance(item, str) or type(quantity) is not int or quantity < 1:
        return JsonResponse({"error": BAD_BODY}, status=400)
    task_id = uuid.uuid4().hex  # known before publishing, so the order row can keep it
    with transaction.atomic():
        order = Order.objects.create(item=item, quantity=quantity, task_id=task_id)
        # Published only if the order is committed: a worker never looks for a row that a
        # rollback took back, nor before it is visible.
        transaction.on_commit(
            lambda: confirm_order.apply_async_sync(args=[order.pk], task_id=task_id)
        )
    return JsonResponse({"order_id": order.pk, "task_id": task_id}, status=202)


@require_GET
def get_order(request: HttpRequest, order_id: int) -> JsonResponse:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return JsonResponse({"error": f"no order {order_id}"}, status=404)
    fields = {"id": order.pk, "item": order.item, "quantity": order.quantity}
    return JsonResponse({**fields, "status": order.status, "task_id": order.task_id})
