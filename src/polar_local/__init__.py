"""A local Polar.sh-compatible server for development, demos and tests.

It speaks Polar's wire format for the calls this project makes,
so `polar-sdk` 1.x (`Polar("polar_oat_...", base_url=URL)`) parses every answer. Data lives in
a SQLite file and survives restarts.

    from polar_local import create_app, run_in_thread

    with run_in_thread(create_app("polar.db")) as url:
        polar = Polar("polar_oat_dev", base_url=url)

From the command line: `serve(host, port, db_path, accept_future_timestamps, webhook_url,
webhook_secret)` (wired to `orz polar serve-local`).

Polar API (`/v1`, bearer token required; any `polar_oat_...` token is accepted):
events ingest/list/get/names, meters CRUD + quantities, products CRUD, customers (by id and by
`/external/{external_id}`), subscriptions list/get/update/revoke/create (free products),
checkouts (create), customer sessions (create).

Control API (`/_control`, no authentication; JSON in and out):

* `GET  /health` -> `{"ok": true, "organization_id"}`
* `GET  /stats` -> `{"events", "duplicates", "ingest_requests", "customers", "meters",
  "products", "subscriptions", "webhooks_pending"}`
* `GET  /events?external_customer_id=&customer_id=&name=&limit=100&offset=0` ->
  `{"items": [stored event rows, oldest first], "total"}`; a row has `id`, `external_id`,
  `name`, `customer_id`, `external_customer_id`, `timestamp`, `ts`, `ingested_at`, `metadata`...
* `GET  /events/stats?external_customer_id=&customer_id=&name=&sum=minutes[&sum=...]` ->
  `{"count", "duplicates", "sums": {"minutes": float}}` (numeric metadata values only)
* `DELETE /events/{external_id}` -> `{"deleted"}` (404 if absent): Polar loses that event
* `PATCH  /events/{external_id}` with `{"metadata": {...}}` -> `{"external_id", "metadata"}`:
  the keys given replace those Polar holds (the rest stay)
* `POST /reset` -> `{"ok": true}`: deletes all data, faults and queued webhooks (the webhook
  endpoint settings and the organization id are kept)
* `GET  /requests?path_prefix=/v1/events&limit=100` -> `{"items": [{"seq", "at", "method",
  "path", "query", "status", "fault", "body"}]}`: every `/v1` call, newest first
* `POST /faults` with `{"kind": "latency"|"status"|"drop", "status": 429|500|503|...,
  "retry_after": int, "latency_ms": int, "path_prefix": "/v1/", "method": null,
  "count": N | null, "rate": 0..1 | null, "seed": int | null}` -> 201 rule
  `{"id", ..., "remaining", "fired"}`. `count`: the next N matching calls; `rate`: each
  matching call with that probability (seeded RNG if `seed`); neither: every matching call.
  `status` 429 answers an empty body with `Retry-After: <retry_after or 1>`; `drop` closes
  the socket without a response. Latency rules delay and let the call continue.
* `GET  /faults` -> `{"items": [rules]}`; `DELETE /faults` -> `{"cleared": n}`;
  `DELETE /faults/{id}` -> 204
* `GET  /webhooks` -> `{"url", "secret_set", "max_attempts", "retry_base_seconds",
  "retry_max_seconds", "pending"}`; `PUT /webhooks` with any of `{"url", "secret",
  "max_attempts", "retry_base_seconds", "retry_max_seconds"}` -> same shape
* `GET  /webhooks/deliveries?webhook_id=&type=&limit=100` -> `{"items": [{"webhook_id", "type",
  "url", "subscription_id", "state": pending|retrying|delivered|failed|no_endpoint,
  "attempts", "created_at", "payload": {envelope}, "attempt_log": [{"attempt", "at",
  "webhook_timestamp", "status_code", "error", "success"}]}]}`
* `POST /webhooks/send` with `{"type": "subscription.updated", "subscription_id"}` -> 202
  `{"webhook_id"}`
* `POST /subscriptions` with `{"product_id", "external_customer_id" | "customer_id",
  "customer_email"?, "status"?: "active", "current_period_start"?, "current_period_end"?,
  "cancel_at_period_end"?: false, "metadata"?}` -> 201 Subscription (the customer is created
  if the external id is unknown; webhooks `subscription.created` and `.active` are sent)
* `PATCH /subscriptions/{id}` with any of `{"status", "current_period_start",
  "current_period_end", "cancel_at_period_end", "metadata"}` -> Subscription (+ webhooks)
* `POST /subscriptions/{id}/cycle` -> Subscription: renews the period, or ends the
  subscription if it was set to cancel at period end (+ webhooks)
* `POST /checkouts/{id}/complete` -> 201 Subscription: what a paid checkout would create
* `POST /discounts/{id}/redeem` -> Discount: an invoice used it (`redemptions_count` + 1;
  422 once `max_redemptions` is reached)

Webhooks are signed like a legacy Polar endpoint (HMAC key = UTF-8 bytes of the whole secret),
carry `api_version: "2026-04"`, keep their `webhook-id` across retries, and are retried with
exponential backoff (2 s base, capped at 20 min, 10 attempts by default), FIFO per endpoint.
"""

from .app import context_of, create_app
from .runner import ServerThread, run_in_thread, serve

__all__ = ["ServerThread", "context_of", "create_app", "run_in_thread", "serve"]
